//! `taxi-standins COMMAND [ARGS...]`: starts DynamoDB Local, kinesalite and
//! osmem-server on free loopback ports, runs the command with
//! `DYNAMODB_ENDPOINT`, `KINESIS_ENDPOINT` and `OPENSEARCH_ENDPOINT` set to
//! them, stops them, and exits with the command's status. Run it from the
//! project root (where `node_modules` is).

use std::process::{Command, ExitCode};

use taxi_standins::StandIn;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: taxi-standins COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let root = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: the current directory: {e}");
            return ExitCode::from(2);
        }
    };
    let mut running = Vec::new();
    for (service, variable) in [
        (StandIn::DynamoDbLocal, "DYNAMODB_ENDPOINT"),
        (StandIn::Kinesalite, "KINESIS_ENDPOINT"),
        (StandIn::OsmemServer, "OPENSEARCH_ENDPOINT"),
    ] {
        match service.start(&root) {
            Ok(standin) => {
                eprintln!("{} at {} ({variable})", service.name(), standin.endpoint());
                running.push((variable, standin));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut command = Command::new(program);
    command.args(rest);
    for (variable, standin) in &running {
        command.env(variable, standin.endpoint());
    }
    let status = command.status();
    drop(running);
    match status {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!("error: running {program}: {e}");
            ExitCode::from(2)
        }
    }
}
