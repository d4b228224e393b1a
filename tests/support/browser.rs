//! A real headless Chromium for the page tests, driven over the Chrome
//! DevTools Protocol (https://chromedevtools.github.io/devtools-protocol/):
//! the Debian package's binary (`chromium-headless-shell` or `chromium`, or
//! `CHROMIUM`), a fresh profile per browser, one websocket per page.
//! Console errors, uncaught exceptions and failed loads are collected so a
//! test can require that there were none.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser binary: `CHROMIUM`, else the first Debian one on the PATH.
pub fn chromium_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium-headless-shell", "chromium"] {
        if let Some(found) = std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()) {
            return Ok(found);
        }
    }
    Err("no Chromium found: apt-get install chromium-headless-shell (or chromium), or set CHROMIUM".into())
}

/// A running headless Chromium, killed (and its profile removed) on drop.
pub struct Browser {
    process: Child,
    profile: PathBuf,
    http: String,
}

impl Browser {
    pub fn launch() -> Result<Browser, String> {
        let binary = chromium_binary()?;
        let profile = std::env::temp_dir().join(crate::standins::unique_name("chromium-profile"));
        std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        let mut process = Command::new(&binary)
            .args([
                "--headless",
                // Tests run as root in CI, where Chromium's sandbox cannot start; the pages are the test's own.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Debian's /usr/bin/chromium* are shell scripts that run the browser as their child: a
            // group of its own lets Drop stop the browser and its helpers, not only the script.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr gives the port.
        let stderr = process.stderr.take().expect("piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sender = Some(sender);
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    if let Some(sender) = sender.take() {
                        let _ = sender.send(rest.split('/').next().unwrap_or_default().to_owned());
                    }
                }
            }
        });
        let Ok(host) = receiver.recv_timeout(Duration::from_secs(30)) else {
            drop(Browser { process, profile, http: String::new() });
            return Err(format!("{} did not open its DevTools port within 30 s", binary.display()));
        };
        Ok(Browser { process, profile, http: format!("http://{host}") })
    }

    /// A new tab, with console and log collection on.
    pub async fn new_page(&self) -> Result<Page, String> {
        let target: Value = reqwest::Client::new()
            .put(format!("{}/json/new?about:blank", self.http))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let url = target["webSocketDebuggerUrl"].as_str().ok_or_else(|| format!("no websocket for the new page: {target}"))?;
        let page = Page::connect(url).await?;
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(domain, json!({})).await?;
        }
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group this browser was started in (its id is the script's).
        let kill_group = format!("kill -KILL -{}", self.process.id());
        let _ = Command::new("sh").args(["-c", &kill_group]).stderr(Stdio::null()).status();
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One tab.
pub struct Page {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Page {
    async fn connect(url: &str) -> Result<Page, String> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("{url}: {e}"))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let (answers, found) = (Arc::clone(&pending), Arc::clone(&problems));
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = value["id"].as_u64() {
                    if let Some(sender) = answers.lock().unwrap().remove(&id) {
                        let _ = sender.send(value);
                    }
                } else if let Some(problem) = problem_of(&value) {
                    found.lock().unwrap().push(problem);
                }
            }
        });
        Ok(Page { outgoing, pending, next_id: AtomicU64::new(1), problems })
    }

    /// One DevTools command; its `result`, or its error as text.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, sender);
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.outgoing.send(Message::Text(message.into())).map_err(|_| "the DevTools connection is closed".to_owned())?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, receiver)
            .await
            .map_err(|_| format!("{method}: no answer within {COMMAND_TIMEOUT:?}"))?
            .map_err(|_| format!("{method}: the connection closed"))?;
        match answer.get("error") {
            Some(error) => Err(format!("{method}: {error}")),
            None => Ok(answer["result"].clone()),
        }
    }

    /// The viewport, in CSS pixels at a device scale of 1.
    pub async fn set_viewport(&self, width: u32, height: u32, mobile: bool) -> Result<(), String> {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", params).await.map(|_| ())
    }

    /// Opens `url` and waits for its load event.
    pub async fn navigate(&self, url: &str) -> Result<(), String> {
        let answer = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = answer.get("errorText") {
            return Err(format!("{url}: {error}"));
        }
        let loaded = format!("location.href === {} && document.readyState === 'complete'", json!(url));
        self.wait_for(&loaded, COMMAND_TIMEOUT).await.map(|_| ())
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn evaluate(&self, expression: &str) -> Result<Value, String> {
        let answer = self.call("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true})).await?;
        if let Some(details) = answer.get("exceptionDetails") {
            return Err(format!("{expression}: {}", details["exception"]["description"].as_str().unwrap_or(&details.to_string())));
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Polls `expression` until it is truthy; its value, or an error after `timeout`.
    pub async fn wait_for(&self, expression: &str, timeout: Duration) -> Result<Value, String> {
        let started = Instant::now();
        loop {
            let value = self.evaluate(expression).await?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("");
            if truthy {
                return Ok(value);
            }
            if started.elapsed() > timeout {
                return Err(format!("{expression} still {value} after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let answer = self.call("Page.captureScreenshot", json!({"format": "png"})).await?;
        let data = answer["data"].as_str().ok_or("no screenshot data")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| e.to_string())?;
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Console errors, uncaught exceptions and failed loads so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}

/// What an event says went wrong, if anything.
fn problem_of(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" if matches!(params["type"].as_str(), Some("error" | "assert")) => {
            Some(format!("console.{}: {}", params["type"].as_str().unwrap_or_default(), params["args"]))
        }
        "Runtime.exceptionThrown" => Some(format!("uncaught: {}", params["exceptionDetails"])),
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            Some(format!("log: {} {}", params["entry"]["text"], params["entry"]["url"].as_str().unwrap_or_default()))
        }
        _ => None,
    }
}
