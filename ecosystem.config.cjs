// PM2 process file for moziplus (SPEC §11).
//
//   cargo build --release && pm2 start ecosystem.config.cjs
//
// MOZI_BIN and MOZI_HOME override the binary and the home (default: this
// checkout). kill_timeout must outlast the daemon's graceful shutdown
// (daemon.kill_grace, 10 s by default, plus closing the databases): PM2 sends
// SIGINT, waits kill_timeout, then SIGKILLs.
const path = require("path");

const home = process.env.MOZI_HOME || __dirname;
const bin = process.env.MOZI_BIN || path.join(__dirname, "target", "release", "moziplus");
const args = ["serve"].concat(process.env.MOZI_SERVE_ARGS ? process.env.MOZI_SERVE_ARGS.split(" ") : []);

module.exports = {
  apps: [
    {
      name: process.env.MOZI_PM2_NAME || "moziplus",
      script: bin,
      args,
      interpreter: "none",
      cwd: home,
      env: { MOZI_HOME: home, MOZI_LOG: "info,sqlx=warn" },
      autorestart: true,
      max_restarts: 10,
      restart_delay: 3000,
      kill_timeout: 30000,
      treekill: false, // agents live in their own process groups; the daemon stops them itself
      out_file: path.join(home, "logs", "moziplus.out.log"),
      error_file: path.join(home, "logs", "moziplus.err.log"),
      merge_logs: true,
      time: true,
    },
  ],
};
