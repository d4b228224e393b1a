//! The errors a new user meets first are one clear line on stderr, with no SDK
//! debug dump and no colour codes (stderr is not a terminal here).

use std::path::Path;
use std::process::Command;

/// Runs `taxi-pipeline replay` on the fixture with only `env` (and `PATH`) set;
/// returns the exit code and stderr.
fn replay(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let home = std::env::temp_dir().join(format!("taxi-first-errors-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/yellow_tripdata_2015-01-10_fixture_1000.csv");
    let output = Command::new(env!("CARGO_BIN_EXE_taxi-pipeline"))
        .args(["replay", fixture.to_str().unwrap(), "--stream", "taxi-trips", "--quiet"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        // No instance metadata service to ask (the SDK's last resort for both).
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("running taxi-pipeline");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn assert_one_line(stderr: &str, starts: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with(starts), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr:?}");
    assert!(!stderr.contains("DispatchFailure(") && !stderr.contains("source:"), "no debug dump: {stderr}");
}

#[test]
fn no_region_says_how_to_set_one() {
    let (code, stderr) = replay(&[]);
    assert_eq!(code, Some(1));
    assert_one_line(&stderr, "error: no AWS region: set AWS_REGION");
}

#[test]
fn no_credentials_say_where_they_come_from() {
    let (code, stderr) = replay(&[("AWS_REGION", "eu-west-1")]);
    assert_eq!(code, Some(1));
    assert_one_line(&stderr, "error: no AWS credentials: set AWS_PROFILE");
}

#[test]
fn an_unreachable_endpoint_is_one_line_without_the_sdk_dump() {
    let (code, stderr) = replay(&[
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        // Nothing listens on the discard port.
        ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:9"),
        ("AWS_MAX_ATTEMPTS", "1"),
    ]);
    assert_eq!(code, Some(1));
    assert_one_line(&stderr, "error: Kinesis ListShards failed (retry may help)");
}
