//! The real function binaries, run by `cargo lambda watch` (PyPI
//! `cargo-lambda`, installed by `make deploy-tools`), invoked over its Lambda
//! API as AWS would.
//!
//! Public API:
//!
//! - [`LambdaWatch::start`]`(env)`: builds the workspace's function binaries
//!   (see [`build_functions`]), then starts `cargo lambda watch` from the
//!   workspace root on a free loopback port, with `env` (plus [`FIXED_ENV`])
//!   given to every function, and waits until it answers. Dropping the value
//!   stops watch and the function processes (its whole process group; also when
//!   the test process dies, as the stand-ins do).
//! - [`LambdaWatch::endpoint`]: `http://127.0.0.1:PORT`, the value for
//!   `taxi-pipeline local --invoke-endpoint`.
//! - [`LambdaWatch::invoke`]`(function, payload)` / [`LambdaWatch::invoke_file`]:
//!   POST the payload to [`invocation_url`]`(endpoint, function)` =
//!   `{endpoint}/2015-03-31/functions/{function}/invocations` and return the
//!   function's JSON answer, or [`WatchError::Function`] when it reports an error.
//! - [`LambdaWatch::output`]: everything watch and the functions printed so far
//!   (logs and EMF metric lines).
//! - [`standin_env`]: the region, dummy credentials and
//!   `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_KINESIS` that point a
//!   function's SDK at the stand-ins.
//!
//! Functions are named by their binary (`aggregate`, `close-windows`); watch
//! runs `cargo run --bin NAME` on the first invocation of each. Builds go to the
//! workspace's target directory with the dev profile and no extra flags, so the
//! binaries are the ones `cargo build --bin NAME` makes and what the rest of the
//! suite already compiled is reused. Watch is started with `--ignore-changes`:
//! edits in the working tree never restart a function under a test. Run under
//! `cargo nextest` (as `make test` does): plain `cargo test` holds the target
//! directory's lock while tests run, so the nested build would wait for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Variables every function gets, whatever the caller passes.
pub const FIXED_ENV: &[(&str, &str)] = &[("RUST_LOG", "info"), ("RUST_BACKTRACE", "1")];

/// How long watch may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one invocation may take (the first one of a function starts its process).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cargo-lambda was not found ({0}); run `make deploy-tools`, or set CARGO_LAMBDA to its path")]
    NotInstalled(String),
    #[error("building the functions failed: {0}")]
    Build(String),
    #[error("starting cargo lambda watch failed: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cargo lambda watch did not answer on port {port} within {waited:?}; its output:\n{output}")]
    NotReady { port: u16, waited: Duration, output: String },
    #[error("invoking {function}: {message}")]
    Invoke { function: String, message: String },
    #[error("{function} answered with an error: {answer}")]
    Function { function: String, answer: Value },
}

/// The invocation URL of a function behind a Lambda API endpoint.
pub fn invocation_url(endpoint: &str, function: &str) -> String {
    format!("{}/2015-03-31/functions/{function}/invocations", endpoint.trim_end_matches('/'))
}

/// The `cargo-lambda` program: `CARGO_LAMBDA`, else the one `make deploy-tools`
/// installed in `target/deploy-tools`, else the one on `PATH`.
pub fn cargo_lambda() -> Result<PathBuf, WatchError> {
    if let Some(path) = std::env::var_os("CARGO_LAMBDA") {
        return Ok(PathBuf::from(path));
    }
    let installed = crate::workspace_root().join("target/deploy-tools/bin/cargo-lambda");
    if installed.is_file() {
        return Ok(installed);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("cargo-lambda"))
        .find(|candidate| candidate.is_file());
    on_path.ok_or_else(|| WatchError::NotInstalled(format!("not in CARGO_LAMBDA, {}, nor on PATH", installed.display())))
}

/// The cargo that runs this test (`CARGO`, set by cargo and nextest), else `cargo`.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Builds the given binaries exactly as watch's `cargo run --bin NAME` will
/// (workspace root, dev profile, no flags), so the first invocation finds them
/// fresh and a compile error is reported here rather than as a hung invocation.
pub fn build_functions(bins: &[&str]) -> Result<(), WatchError> {
    let mut command = Command::new(cargo());
    command.arg("build").arg("--quiet").current_dir(crate::workspace_root());
    for bin in bins {
        command.arg("--bin").arg(bin);
    }
    let output = command.output().map_err(|e| WatchError::Build(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(WatchError::Build(String::from_utf8_lossy(&output.stderr).into_owned()))
    }
}

/// Region, dummy credentials and endpoint URLs for functions that talk to the
/// stand-ins (DynamoDB Local and the Kinesis stand-in, started on first use).
pub fn standin_env() -> Vec<(String, String)> {
    vec![
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "local".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "local".into()),
        ("AWS_ENDPOINT_URL_DYNAMODB".into(), crate::standins::dynamodb_endpoint().into()),
        ("AWS_ENDPOINT_URL_KINESIS".into(), crate::standins::kinesis_endpoint().into()),
    ]
}

/// A running `cargo lambda watch`.
#[derive(Debug)]
pub struct LambdaWatch {
    endpoint: String,
    log: PathBuf,
    child: Child,
    http: reqwest::Client,
}

impl LambdaWatch {
    /// Builds the `aggregate` and `close-windows` binaries and starts watch
    /// with `env` for every function (see the module documentation).
    pub fn start<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Result<LambdaWatch, WatchError> {
        let program = cargo_lambda()?;
        build_functions(&["aggregate", "close-windows"])?;
        let port = taxi_standins::free_port().map_err(WatchError::Spawn)?;
        let log = std::env::temp_dir().join(format!("lambda-watch-{}-{port}.log", std::process::id()));
        let mut args = vec![
            "lambda".to_owned(),
            "watch".into(),
            "--ignore-changes".into(),
            "--invoke-address".into(),
            "127.0.0.1".into(),
            "--invoke-port".into(),
            port.to_string(),
        ];
        for (key, value) in FIXED_ENV.iter().map(|(k, v)| (*k, *v)).chain(env.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))) {
            // watch splits --env-var values at commas.
            assert!(!value.contains(','), "{key}: values passed to cargo lambda watch cannot contain commas");
            args.push("--env-var".into());
            args.push(format!("{key}={value}"));
        }
        let quoted: Vec<String> = std::iter::once(program.display().to_string()).chain(args).map(|a| shell_quote(&a)).collect();
        // `setsid` gives watch (and the functions it starts) a process group of
        // its own; `read` returns when our end of stdin closes (drop, or this
        // process dying), then that group is stopped: politely first, then for good.
        let script = format!(
            "setsid {} >{} 2>&1 </dev/null & pid=$!; read _; kill -TERM -$pid 2>/dev/null; \
             i=0; while kill -0 -$pid 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
             kill -KILL -$pid 2>/dev/null; wait $pid 2>/dev/null",
            quoted.join(" "),
            shell_quote(&log.display().to_string())
        );
        File::create(&log).map_err(WatchError::Spawn)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(crate::workspace_root())
            .env("CARGO", cargo())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(WatchError::Spawn)?;
        let http = reqwest::Client::builder().timeout(INVOKE_TIMEOUT).build().expect("a reqwest client");
        let watch = LambdaWatch { endpoint: format!("http://127.0.0.1:{port}"), log, child, http };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > START_TIMEOUT {
                return Err(WatchError::NotReady { port, waited: START_TIMEOUT, output: watch.output() });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(watch)
    }

    /// `http://127.0.0.1:PORT`: the Lambda API endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Invokes `function` with `payload` and returns its JSON answer.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, WatchError> {
        let fail = |message: String| WatchError::Invoke { function: function.to_owned(), message };
        let response = self
            .http
            .post(invocation_url(&self.endpoint, function))
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
            .await
            .map_err(|e| fail(format!("{e}; watch output:\n{}", self.output())))?;
        let status = response.status();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.text().await.map_err(|e| fail(e.to_string()))?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| fail(format!("{status}: {e}: {body}")))?;
        if !status.is_success() || function_error || answer.get("errorType").is_some() {
            return Err(WatchError::Function { function: function.to_owned(), answer });
        }
        Ok(answer)
    }

    /// Invokes `function` with the JSON of a file (such as one of `events/`).
    pub async fn invoke_file(&self, function: &str, path: &Path) -> Result<Value, WatchError> {
        let fail = |message: String| WatchError::Invoke { function: function.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let payload: Value = serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        self.invoke(function, &payload).await
    }

    /// Everything watch and the functions printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LambdaWatch {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
