//! 64 real `moziplus bb claim` processes race for one task, round after round.
//!
//! Proves "claim is atomic: of any number of concurrent claimers exactly
//! one wins; the others get a clear 'already claimed by X' answer (exit code
//! distinct from errors)" and that lock contention never surfaces to the user
//! as `database is locked`.
//!
//! To make the processes really collide, each claimer is started behind a gate:
//! `sh -c 'read -r gate; exec moziplus …'` blocks on its stdin until the test
//! has spawned all 64 and then writes one line to each of them in a tight loop,
//! so they are released within microseconds of each other.

mod support;

use std::io::Write;
use std::process::Stdio;

use support::{block_on, raw_connection, scrub_env, wait_child, Out, TestHome};

const CLAIMERS: usize = 64;
const ROUNDS: usize = 25;

/// Spawns every claimer behind the gate, opens it, and collects the results
/// in claimer order.
fn race(home: &TestHome, project: &str, task: &str) -> Vec<Out> {
    let mut children = Vec::with_capacity(CLAIMERS);
    for i in 0..CLAIMERS {
        let agent = format!("agent-{i:02}");
        let mut c = std::process::Command::new("sh");
        scrub_env(&mut c);
        c.arg("-c")
            .arg(r#"read -r gate; exec "$0" "$@""#)
            .arg(support::BIN)
            .args(["--home"])
            .arg(home.path())
            .args(["bb", "--project", project, "claim", task, "--agent", &agent])
            .current_dir(home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("spawn claimer");
        children.push((agent, child));
    }
    // Open the gate for everyone at once.
    let mut stdins: Vec<_> = children
        .iter_mut()
        .map(|(_, c)| c.stdin.take().expect("stdin"))
        .collect();
    for s in &mut stdins {
        s.write_all(b"go\n").expect("open gate");
    }
    drop(stdins);
    children
        .into_iter()
        .map(|(agent, child)| wait_child(child, format!("{agent}: bb claim {task}")))
        .collect()
}

#[test]
fn sixty_four_processes_one_winner_every_round() {
    let home = TestHome::new();
    home.create_project("race");
    let tasks: Vec<String> = (0..ROUNDS)
        .map(|i| home.create_task("race", &format!("contested task {i}"), &[]))
        .collect();

    let mut winners = Vec::new();
    for (round, task) in tasks.iter().enumerate() {
        let outs = race(&home, "race", task);
        let won: Vec<(usize, &Out)> = outs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.code == 0)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round} ({task}): expected exactly one winner, got {}:\n{}",
            won.len(),
            won.iter().map(|(_, o)| o.to_string()).collect::<String>()
        );
        let (winner_idx, winner_out) = won[0];
        let winner = format!("agent-{winner_idx:02}");
        assert!(
            winner_out
                .stdout
                .contains(&format!("claimed {task} for {winner}")),
            "winner output:\n{winner_out}"
        );
        for (i, o) in outs.iter().enumerate() {
            let lower = o.stderr.to_lowercase();
            assert!(
                !lower.contains("database is locked") && !lower.contains("busy"),
                "round {round}: lock contention surfaced to a user:\n{o}"
            );
            if i == winner_idx {
                continue;
            }
            assert_eq!(
                o.code, 3,
                "round {round}: a loser must exit 3 (conflict):\n{o}"
            );
            assert!(
                o.stderr
                    .contains(&format!("{task} is already claimed by {winner}")),
                "round {round}: loser message must name the winner {winner}:\n{o}"
            );
            assert!(o.stdout.is_empty(), "a loser printed a success:\n{o}");
        }
        winners.push(winner);
    }

    // The stored state agrees with what the processes reported.
    block_on(async {
        let mut conn = raw_connection(&home.db("race")).await;
        for (task, winner) in tasks.iter().zip(&winners) {
            let (status, claimed_by): (String, Option<String>) =
                sqlx::query_as("SELECT status, claimed_by FROM task WHERE id = ?")
                    .bind(task)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(status, "working", "{task}");
            assert_eq!(claimed_by.as_deref(), Some(winner.as_str()), "{task}");
            let claims: Vec<String> = sqlx::query_scalar(
                "SELECT actor FROM event WHERE task_id = ? AND kind = 'task.claimed'",
            )
            .bind(task)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert_eq!(claims, vec![winner.clone()], "{task}: claim events");
        }
        // Nothing else was written: per task one create and one claim event.
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(events, 2 * ROUNDS as i64, "events besides create+claim");
    });
}
