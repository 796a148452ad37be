use super::*;

#[test]
fn defaults_match_the_spec() {
    let c = Config::default();
    assert_eq!(c.daemon.tick_interval, 30);
    assert_eq!(c.daemon.task_timeout, 600);
    assert_eq!(c.daemon.max_global_agents, 5);
    assert_eq!(c.daemon.max_per_agent, 1);
    assert_eq!(c.daemon.zombie_threshold, 20);
    assert_eq!(c.inbox.max_size_bytes, 1_048_576);
    assert_eq!(c.review.confidence_threshold, 0.7);
    assert_eq!(c.experience.distill_threshold, 5);
    assert_eq!(c.server.bind, "127.0.0.1:8083");
    assert!(c.validate().is_ok());
}

#[test]
fn later_layers_win_and_merge_deeply() {
    let file = Layer::from_yaml(
        Source::File("default.yaml".into()),
        "daemon:\n  tick_interval: 10\nreview:\n  debate_max_rounds: 7\n",
    )
    .unwrap();
    let env = Layer::from_env_vars([("MOZI_DAEMON__TICK_INTERVAL".to_string(), "3".to_string())])
        .unwrap();
    let mut layers = vec![file];
    layers.extend(env);
    let c = Config::from_layers(&layers).unwrap();
    assert_eq!(c.daemon.tick_interval, 3);
    assert_eq!(c.daemon.task_timeout, 600, "untouched keys keep defaults");
    assert_eq!(c.review.debate_max_rounds, 7);
    assert_eq!(c.review.default_max_rounds, 3);
}

#[test]
fn unknown_key_names_key_file_and_line() {
    let err = Layer::from_yaml(
        Source::File("config/default.yaml".into()),
        "daemon:\n  tick_interval: 10\n  tick_intervall: 5\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("config/default.yaml"), "{err}");
    assert!(err.contains("tick_intervall"), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn syntax_error_reports_line_and_column() {
    let err = Layer::from_yaml(
        Source::File("x.yaml".into()),
        "daemon:\n  tick_interval: [1,\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("x.yaml"), "{err}");
    assert!(err.contains("line"), "{err}");
    assert!(err.contains("column"), "{err}");
}

#[test]
fn bad_type_is_refused() {
    let err = Layer::from_yaml(
        Source::File("x.yaml".into()),
        "daemon:\n  max_per_agent: lots\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_per_agent") || err.contains("invalid type"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn out_of_range_is_an_error_not_a_reset() {
    let err = Layer::from_yaml(
        Source::File("config/default.yaml".into()),
        "# comment\ndaemon:\n  task_timeout: 5\n  tick_interval: 0\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("daemon.tick_interval"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("config/default.yaml"), "{err}");
    let err = Layer::from_env_vars([(
        "MOZI_REVIEW__CONFIDENCE_THRESHOLD".to_string(),
        "1.5".to_string(),
    )])
    .unwrap_err()
    .to_string();
    assert!(err.contains("MOZI_REVIEW__CONFIDENCE_THRESHOLD"), "{err}");
}

#[test]
fn unknown_env_key_is_named() {
    let err = Layer::from_env_vars([("MOZI_DAEMON__NOPE".to_string(), "1".to_string())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("MOZI_DAEMON__NOPE"), "{err}");
    // Identity variables are not configuration.
    assert!(
        Layer::from_env_vars([("MOZI_TASK".to_string(), "T-0001".to_string())])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn key_lines_follow_indentation() {
    let text = "a:\n  x: 1\nb:\n  # note\n  x: 2\n";
    assert_eq!(find_key_line(text, "a.x"), Some(2));
    assert_eq!(find_key_line(text, "b.x"), Some(5));
    assert_eq!(find_key_line(text, "c.x"), None);
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("10MB"), Some(10 * 1024 * 1024));
    assert_eq!(parse_size("512KB"), Some(512 * 1024));
    assert_eq!(parse_size("42"), Some(42));
    assert_eq!(parse_size("ten"), None);
}

#[test]
fn a_bad_allow_hosts_entry_is_named_with_its_file_and_line() {
    let err = Layer::from_yaml(
        Source::File("config/default.yaml".into()),
        "sandbox:\n  allow_hosts:\n    - github.com\n    - \"pypi org\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sandbox.allow_hosts"), "{err}");
    assert!(err.contains("\"pypi org\" is not a host"), "{err}");
    assert!(err.contains("config/default.yaml"), "{err}");
}
