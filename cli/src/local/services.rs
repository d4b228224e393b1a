//! The three services of a local run: the endpoints given, or stand-ins
//! started on free loopback ports (`taxi-standins`), which stop when this
//! value is dropped, also on an error or Ctrl-C, and even if this process is
//! killed (their lifeline is a pipe from it).

use std::path::Path;

use taxi_standins::{RunningStandIn, StandIn, StandInError};

/// Endpoints the user gave; the rest are started here.
#[derive(Clone, Debug, Default)]
pub struct GivenEndpoints {
    pub kinesis: Option<String>,
    pub dynamodb: Option<String>,
    pub search: Option<String>,
}

/// The endpoints in use, and the stand-ins started for them.
pub struct Services {
    pub kinesis: String,
    pub dynamodb: String,
    pub search: String,
    started: Vec<RunningStandIn>,
}

impl Services {
    /// Starts what is missing, side by side (DynamoDB Local's JVM takes a few
    /// seconds), from `project_root` where `npm ci` put `node_modules`.
    pub fn start(given: GivenEndpoints, project_root: &Path) -> Result<Services, StandInError> {
        let wanted =
            [(StandIn::Kinesalite, &given.kinesis), (StandIn::DynamoDbLocal, &given.dynamodb), (StandIn::OsmemServer, &given.search)];
        let results: Vec<(StandIn, Result<RunningStandIn, StandInError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = wanted
                .iter()
                .filter(|(_, endpoint)| endpoint.is_none())
                .map(|(service, _)| (*service, scope.spawn(move || service.start(project_root))))
                .collect();
            handles.into_iter().map(|(service, handle)| (service, handle.join().expect("starting a stand-in panicked"))).collect()
        });
        let mut started = Vec::new();
        for (_, result) in results {
            // Those already started stop as `started` drops on the error.
            started.push(result?);
        }
        let endpoint = |service: StandIn, given: Option<String>| {
            given.unwrap_or_else(|| started.iter().find(|s| s.service() == service).expect("started above").endpoint().to_owned())
        };
        Ok(Services {
            kinesis: endpoint(StandIn::Kinesalite, given.kinesis.clone()),
            dynamodb: endpoint(StandIn::DynamoDbLocal, given.dynamodb.clone()),
            search: endpoint(StandIn::OsmemServer, given.search.clone()).trim_end_matches('/').to_owned(),
            started,
        })
    }

    /// What was started, for the summary.
    pub fn started(&self) -> Vec<&'static str> {
        self.started.iter().map(|s| s.service().name()).collect()
    }
}
