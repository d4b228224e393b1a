//! `template.yaml` holds what the design depends on: one writer per shard,
//! batch item failures, bounded retries with an on-failure queue, the table's
//! keys and TTL attribute, encryption everywhere, least-privilege IAM, and every
//! variable the functions read fed by a stack parameter whose whole range the
//! functions accept. The functions' own configuration parsers are the judges of
//! what they read and accept.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use serde_norway::Value;
use taxi_aws::config::{AggregateConfig, CloseWindowsConfig};
use taxi_integration_tests::workspace_root;

fn template() -> Value {
    let path = workspace_root().join("template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(&path).expect("template.yaml")).expect("template.yaml is YAML")
}

/// `!Tag value` as (tag without the `!`, value).
fn tagged(value: &Value) -> Option<(&'static str, &Value)> {
    const FUNCTIONS: [&str; 12] = ["Ref", "GetAtt", "If", "Sub", "Equals", "Not", "And", "Or", "Condition", "Join", "Select", "Contains"];
    match value {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = FUNCTIONS.iter().find(|f| tag.trim_start_matches('!') == **f).unwrap_or_else(|| panic!("unexpected tag {tag}"));
            Some((name, &t.value))
        }
        _ => None,
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("expected a string, found {value:?}"))
}

fn resources_of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (text(name), r))
        .collect()
}

/// Every scalar string reachable from `value`, through tags and collections.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| strings(v, out)),
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

/// One list of a value that may be a scalar, a list, or `!If [c, a, b]` of those (both branches).
fn alternatives(value: &Value) -> Vec<Value> {
    match tagged(value) {
        Some(("If", args)) => {
            let args = args.as_sequence().expect("If arguments");
            args[1..].iter().flat_map(alternatives).collect()
        }
        Some(("Ref", r)) if r.as_str() == Some("AWS::NoValue") => vec![],
        _ => match value {
            Value::Sequence(items) => items.iter().flat_map(alternatives).collect(),
            other => vec![other.clone()],
        },
    }
}

// --- a small evaluator: the template with given parameter values ----------------

struct Stack<'a> {
    template: &'a Value,
    parameters: BTreeMap<String, String>,
}

impl<'a> Stack<'a> {
    /// The parameters' defaults, with `overrides`.
    fn new(template: &'a Value, overrides: &[(&str, &str)]) -> Stack<'a> {
        let mut parameters = BTreeMap::new();
        for (name, p) in template["Parameters"].as_mapping().expect("Parameters") {
            let default = match &p["Default"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => panic!("{name:?} default {other:?}"),
            };
            parameters.insert(text(name).to_owned(), default);
        }
        for (name, value) in overrides {
            assert!(parameters.insert(name.to_string(), value.to_string()).is_some(), "no parameter {name}");
        }
        Stack { template, parameters }
    }

    fn condition(&self, name: &str) -> bool {
        self.truth(&self.template["Conditions"][name])
    }

    fn truth(&self, value: &Value) -> bool {
        match tagged(value).unwrap_or_else(|| panic!("a condition function, found {value:?}")) {
            ("Equals", args) => {
                let args = args.as_sequence().expect("Equals arguments");
                self.eval(&args[0]) == self.eval(&args[1])
            }
            ("Not", args) => !self.truth(&args[0]),
            ("And", args) => args.as_sequence().expect("And").iter().all(|c| self.truth(c)),
            ("Or", args) => args.as_sequence().expect("Or").iter().any(|c| self.truth(c)),
            ("Condition", name) => self.condition(text(name)),
            (other, _) => panic!("condition function {other}"),
        }
    }

    /// A scalar's value; `None` for `AWS::NoValue`. Resources and attributes
    /// evaluate to placeholder names.
    fn eval(&self, value: &Value) -> Option<String> {
        match tagged(value) {
            None => Some(match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("a scalar, found {other:?}"),
            }),
            Some(("Ref", name)) => self.reference(text(name)),
            Some(("GetAtt", target)) => Some(text(target).to_owned()),
            Some(("If", args)) => {
                let args = args.as_sequence().expect("If arguments");
                self.eval(if self.condition(text(&args[0])) { &args[1] } else { &args[2] })
            }
            Some(("Sub", body)) => {
                let (mut template, variables) = match body {
                    Value::Sequence(parts) => (text(&parts[0]).to_owned(), parts[1].as_mapping().cloned()),
                    other => (text(other).to_owned(), None),
                };
                while let Some(start) = template.find("${") {
                    let end = start + template[start..].find('}').expect("closing brace");
                    let name = &template[start + 2..end];
                    let replacement = match variables.as_ref().and_then(|v| v.get(name)) {
                        Some(v) => self.eval(v).expect("a value"),
                        None if name.contains('.') => name.to_owned(),
                        None => self.reference(name).expect("a value"),
                    };
                    template.replace_range(start..=end, &replacement);
                }
                Some(template)
            }
            Some((other, _)) => panic!("function {other} in a scalar"),
        }
    }

    fn reference(&self, name: &str) -> Option<String> {
        if name == "AWS::NoValue" {
            return None;
        }
        if let Some(value) = self.parameters.get(name) {
            return Some(value.clone());
        }
        if name.starts_with("AWS::") {
            return Some(format!("pseudo-{name}"));
        }
        assert!(!self.template["Resources"][name].is_null(), "Ref to an unknown name {name}");
        Some(format!("resource-{name}"))
    }

    /// `value` with every `!If` decided and every `AWS::NoValue` left out; other functions stay.
    fn chosen(&self, value: &Value) -> Option<Value> {
        match tagged(value) {
            Some(("If", args)) => {
                let args = args.as_sequence().expect("If arguments");
                self.chosen(if self.condition(text(&args[0])) { &args[1] } else { &args[2] })
            }
            Some(("Ref", r)) if r.as_str() == Some("AWS::NoValue") => None,
            Some(_) => Some(value.clone()),
            None => Some(match value {
                Value::Mapping(m) => Value::Mapping(m.iter().filter_map(|(k, v)| Some((k.clone(), self.chosen(v)?))).collect()),
                Value::Sequence(items) => Value::Sequence(items.iter().filter_map(|v| self.chosen(v)).collect()),
                other => other.clone(),
            }),
        }
    }

    /// A function's environment as the stack would set it.
    fn environment(&self, function: &str) -> BTreeMap<String, String> {
        let variables = self.template["Resources"][function]["Properties"]["Environment"]["Variables"].as_mapping().expect("Variables");
        variables.iter().filter_map(|(k, v)| self.eval(v).map(|v| (text(k).to_owned(), v))).collect()
    }
}

/// Runs a configuration parser over `env`, and returns what it decided and every variable it asked for.
fn read_with<T>(env: &BTreeMap<String, String>, parse: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T) -> (T, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        env.get(name).cloned()
    };
    let result = parse(&lookup);
    (result, asked.into_inner())
}

fn aggregate_config(env: &BTreeMap<String, String>) -> (Result<AggregateConfig, String>, BTreeSet<String>) {
    read_with(env, |lookup| AggregateConfig::from_lookup(lookup).map_err(|e| e.to_string()))
}

fn close_windows_config(env: &BTreeMap<String, String>) -> (Result<CloseWindowsConfig, String>, BTreeSet<String>) {
    read_with(env, |lookup| CloseWindowsConfig::from_lookup(lookup).map_err(|e| e.to_string()))
}

/// Variables a function reads that the stack deliberately leaves at their defaults.
const NOT_EXPOSED: &[(&str, &str)] = &[(
    "ES_TLS_SKIP_VERIFY",
    "certificates are always verified on AWS; the variable exists for local endpoints with self-signed certificates",
)];

/// Parameter sets that reach every variable the functions read (some are read only in a mode).
const PARAMETER_SETS: &[&[(&str, &str)]] = &[
    &[],
    &[("WatermarkMode", "bounded"), ("WindowSlideSeconds", "300")],
    &[
        ("CreateOpenSearchDomain", "false"),
        ("EsEndpoint", "https://search.example.com"),
        ("EsAuth", "basic"),
        ("EsBasicAuthSecret", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:taxi/search-AbCdEf"),
    ],
    &[("CreateOpenSearchDomain", "false"), ("EsEndpoint", "https://x.aoss.amazonaws.com"), ("EsSigV4Service", "aoss")],
];

#[test]
fn every_variable_the_functions_read_is_fed_by_a_parameter_and_their_defaults_agree() {
    let t = template();
    let mut asked_total: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for overrides in PARAMETER_SETS {
        let stack = Stack::new(&t, overrides);
        let aggregate_env = stack.environment("AggregateFunction");
        let close_env = stack.environment("CloseWindowsFunction");
        let (aggregate, asked) = aggregate_config(&aggregate_env);
        let aggregate = aggregate.unwrap_or_else(|e| panic!("{overrides:?}: the aggregate function refuses the stack's environment: {e}"));
        asked_total.entry("AggregateFunction").or_default().extend(asked);
        let (close, asked) = close_windows_config(&close_env);
        let close = close.unwrap_or_else(|e| panic!("{overrides:?}: the close-windows function refuses the stack's environment: {e}"));
        asked_total.entry("CloseWindowsFunction").or_default().extend(asked);
        assert_eq!(aggregate.ingest.window, close.window, "{overrides:?}: both functions see the same windows");
        if overrides.is_empty() {
            // The stack's defaults are the functions' own defaults.
            let only = |env: &BTreeMap<String, String>, keep: &[&str]| -> BTreeMap<String, String> {
                env.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let (bare, _) = aggregate_config(&only(&aggregate_env, &["TABLE_NAME"]));
            assert_eq!(aggregate, bare.unwrap(), "aggregate: template defaults = the function's defaults");
            // The stack's replica count follows its domain (one node: 0), the function's default is the cluster's;
            // the stack's domain keeps 30 days of daily indices, the function's default one index forever.
            let keep = ["TABLE_NAME", "STREAM_NAME", "ES_ENDPOINT", "ES_AUTH", "INDEX_REPLICAS", "INDEX_RETENTION_DAYS"];
            let (bare, _) = close_windows_config(&only(&close_env, &keep));
            let bare = bare.unwrap();
            assert_eq!(close, bare, "close-windows: template defaults = the function's defaults");
        }
    }
    for (function, asked) in &asked_total {
        let set: BTreeSet<String> = t["Resources"][*function]["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| text(k).to_owned())
            .collect();
        for variable in asked {
            let exempt = NOT_EXPOSED.iter().any(|(name, _)| name == variable);
            assert!(set.contains(variable) || exempt, "{function} reads {variable}, which the template does not set");
        }
        for variable in &set {
            assert!(asked.contains(variable), "{function} is given {variable}, which it never reads");
        }
    }
}

#[test]
fn every_function_variable_is_fed_by_a_parameter_or_a_resource() {
    let t = template();
    let parameters = t["Parameters"].as_mapping().unwrap();
    let is_known = |name: &str| parameters.contains_key(name) || !t["Resources"][name].is_null();
    for function in ["AggregateFunction", "CloseWindowsFunction"] {
        for (name, value) in t["Resources"][function]["Properties"]["Environment"]["Variables"].as_mapping().unwrap() {
            // Every branch must reference the stack: no literal value.
            fn fed(value: &Value, known: &dyn Fn(&str) -> bool) -> bool {
                match tagged(value) {
                    Some(("Ref", r)) => known(text(r)) || text(r) == "AWS::NoValue",
                    Some(("GetAtt", r)) => known(text(r).split('.').next().unwrap()),
                    Some(("If", args)) => args.as_sequence().unwrap()[1..].iter().all(|b| fed(b, known)),
                    Some(("Sub", body)) => {
                        let s = match body {
                            Value::Sequence(p) => text(&p[0]),
                            other => text(other),
                        };
                        s.split("${").skip(1).map(|rest| rest.split('}').next().unwrap().split('.').next().unwrap()).any(known)
                    }
                    _ => false,
                }
            }
            assert!(fed(value, &is_known), "{function}: {name:?} = {value:?} is not fed by a parameter");
        }
    }
}

#[test]
fn every_parameter_has_a_default_a_description_a_range_and_a_line_in_the_readme() {
    let t = template();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    for (name, p) in t["Parameters"].as_mapping().unwrap() {
        let name = text(name);
        assert!(!p["Default"].is_null(), "{name}: a default");
        assert!(p["Description"].as_str().is_some_and(|d| d.len() > 10), "{name}: a description");
        let bounded = match text(&p["Type"]) {
            "Number" => !p["AllowedValues"].is_null() || (!p["MinValue"].is_null() && !p["MaxValue"].is_null()),
            "String" => !p["AllowedValues"].is_null() || !p["AllowedPattern"].is_null(),
            other => panic!("{name}: type {other}"),
        };
        assert!(bounded, "{name}: allowed values, a pattern or a range");
        assert!(readme.contains(&format!("| `{name}` |")), "{name}: a row in the README's configuration table");
    }
}

#[test]
fn the_whole_range_of_every_numeric_parameter_is_accepted_by_the_functions() {
    let t = template();
    for (name, p) in t["Parameters"].as_mapping().unwrap() {
        let name = text(name);
        for bound in ["MinValue", "MaxValue"] {
            let Some(value) = p[bound].as_i64() else { continue };
            if name == "WindowSlideSeconds" && value > 600 {
                continue; // the slide must divide the size: checked with the size below
            }
            let value = value.to_string();
            let mut overrides = vec![(name, value.as_str())];
            if name == "WindowSizeSeconds" {
                overrides.push(("WindowSlideSeconds", "0"));
            }
            let stack = Stack::new(&t, &overrides);
            let (aggregate, _) = aggregate_config(&stack.environment("AggregateFunction"));
            let (close, _) = close_windows_config(&stack.environment("CloseWindowsFunction"));
            assert!(aggregate.is_ok() && close.is_ok(), "{name}={value}: {aggregate:?} {close:?}");
        }
    }
}

#[test]
fn the_event_source_mapping_keeps_the_exactly_once_design() {
    let t = template();
    let function = &t["Resources"]["AggregateFunction"]["Properties"];
    let events = function["Events"].as_mapping().unwrap();
    let kinesis: Vec<&Value> = events.values().filter(|e| e["Type"].as_str() == Some("Kinesis")).collect();
    assert_eq!(kinesis.len(), 1, "one Kinesis event source");
    let esm = &kinesis[0]["Properties"];
    assert_eq!(esm["ParallelizationFactor"].as_i64(), Some(1), "one writer per shard: the sequence fence needs it");
    assert_eq!(esm["FunctionResponseTypes"], Value::Sequence(vec![Value::String("ReportBatchItemFailures".into())]));
    assert_eq!(esm["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert_eq!(esm["StartingPosition"].as_str(), Some("TRIM_HORIZON"), "nothing written before the mapping is lost");
    assert!(matches!(tagged(&esm["Stream"]), Some(("GetAtt", s)) if text(s) == "TripStream.Arn"));
    for (property, max) in [("BatchSize", 10_000), ("MaximumBatchingWindowInSeconds", 300)] {
        let Some(("Ref", parameter)) = tagged(&esm[property]) else { panic!("{property} is a parameter") };
        assert!(t["Parameters"][text(parameter)]["MaxValue"].as_i64().unwrap() <= max, "{property}");
    }
    let Some(("GetAtt", destination)) = tagged(&esm["DestinationConfig"]["OnFailure"]["Destination"]) else {
        panic!("an on-failure destination")
    };
    let queue = text(destination).strip_suffix(".Arn").expect("a queue ARN");
    assert_eq!(t["Resources"][queue]["Type"].as_str(), Some("AWS::SQS::Queue"));
    // The closer runs on a schedule and stops before its timeout.
    let close = &t["Resources"]["CloseWindowsFunction"]["Properties"];
    assert!(close["Events"].as_mapping().unwrap().values().any(|e| e["Type"].as_str() == Some("Schedule")));
    let keep_running_max = t["Parameters"]["KeepRunningSeconds"]["MaxValue"].as_i64().unwrap();
    let timeout = close["Timeout"].as_i64().unwrap();
    let margin_s = taxi_aws::close_windows_function::SAFETY_MARGIN_MS / 1000;
    assert!(keep_running_max + margin_s < timeout, "KeepRunningSeconds ({keep_running_max}) + margin stays under the timeout ({timeout})");
}

#[test]
fn the_functions_are_built_by_cargo_lambda_for_the_chosen_architecture() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Handler"].as_str(), Some("bootstrap"));
    assert!(
        matches!(globals["Architectures"].as_sequence().map(|a| a.as_slice()), Some([a]) if matches!(tagged(a), Some(("Ref", r)) if text(r) == "Architecture"))
    );
    let architecture = &t["Parameters"]["Architecture"];
    assert_eq!(architecture["Default"].as_str(), Some("arm64"));
    assert_eq!(architecture["AllowedValues"], serde_norway::from_str::<Value>("[arm64, x86_64]").unwrap());
    let functions = resources_of_type(&t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 2);
    for (name, function) in functions {
        assert_eq!(function["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"), "{name}");
        let binary = text(&function["Metadata"]["BuildProperties"]["Binary"]);
        let code = text(&function["Properties"]["CodeUri"]);
        let manifest = std::fs::read_to_string(workspace_root().join(code).join("Cargo.toml")).expect("the function's Cargo.toml");
        assert!(manifest.contains(&format!("name = \"{binary}\"")), "{name}: {code} builds the binary {binary}");
        // The stack owns memory, timeout, log group and tags: `cargo lambda deploy` would reset them.
        assert!(!manifest.contains("[package.metadata.lambda"), "{name}: no cargo lambda deploy settings in {code}");
    }
}

#[test]
fn the_table_matches_the_stores_and_every_store_is_encrypted() {
    let t = template();
    let tables = resources_of_type(&t, "AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 1);
    let table = &tables[0].1["Properties"];
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(table["TimeToLiveSpecification"]["AttributeName"].as_str(), Some(taxi_aws::dynamo::TTL_ATTRIBUTE));
    assert_eq!(table["TimeToLiveSpecification"]["Enabled"].as_bool(), Some(true));
    let keys: Vec<(&str, &str)> =
        table["KeySchema"].as_sequence().unwrap().iter().map(|k| (text(&k["AttributeName"]), text(&k["KeyType"]))).collect();
    assert_eq!(keys, vec![(taxi_aws::dynamo::PK, "HASH"), (taxi_aws::dynamo::SK, "RANGE")]);
    assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(), Some(true));
    assert_eq!(table["SSESpecification"]["SSEEnabled"].as_bool(), Some(true));

    let streams = resources_of_type(&t, "AWS::Kinesis::Stream");
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].1["Properties"]["StreamEncryption"]["EncryptionType"].as_str(), Some("KMS"));
    for (name, queue) in resources_of_type(&t, "AWS::SQS::Queue") {
        assert_eq!(queue["Properties"]["SqsManagedSseEnabled"].as_bool(), Some(true), "{name}");
    }
    for (name, topic) in resources_of_type(&t, "AWS::SNS::Topic") {
        assert!(!topic["Properties"]["KmsMasterKeyId"].is_null(), "{name}");
    }
    for (name, domain) in resources_of_type(&t, "AWS::OpenSearchService::Domain") {
        let p = &domain["Properties"];
        assert_eq!(p["EncryptionAtRestOptions"]["Enabled"].as_bool(), Some(true), "{name}");
        assert_eq!(p["NodeToNodeEncryptionOptions"]["Enabled"].as_bool(), Some(true), "{name}");
        assert_eq!(p["DomainEndpointOptions"]["EnforceHTTPS"].as_bool(), Some(true), "{name}");
        assert!(text(&p["DomainEndpointOptions"]["TLSSecurityPolicy"]).starts_with("Policy-Min-TLS-1-2"), "{name}");
    }
}

/// Every policy document in the template: (where, document).
fn policy_documents(t: &Value) -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    for (name, role) in resources_of_type(t, "AWS::IAM::Role") {
        for policy in alternatives(&role["Properties"]["Policies"]) {
            documents.push((format!("{name}/{}", text(&policy["PolicyName"])), policy["PolicyDocument"].clone()));
        }
        assert!(role["Properties"]["ManagedPolicyArns"].is_null(), "{name}: no managed policies (they grant on *)");
    }
    for kind in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"] {
        for (name, policy) in resources_of_type(t, kind) {
            documents.push((name.to_owned(), policy["Properties"]["PolicyDocument"].clone()));
        }
    }
    documents
}

#[test]
fn iam_grants_named_actions_on_this_stacks_resources_only() {
    let t = template();
    let documents = policy_documents(&t);
    assert!(documents.len() >= 3, "the roles' policies: {documents:?}");
    let mut granted = BTreeSet::new();
    for (place, document) in &documents {
        for statement in alternatives(&document["Statement"]) {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{place}");
            let actions: Vec<Value> = alternatives(&statement["Action"]);
            for action in &actions {
                let action = text(action);
                assert!(!action.contains('*'), "{place}: wildcard action {action}");
                granted.insert(action.to_owned());
            }
            for resource in alternatives(&statement["Resource"]) {
                let mut texts = Vec::new();
                strings(&resource, &mut texts);
                let xray_only = actions.iter().all(|a| text(a).starts_with("xray:Put"));
                assert!(
                    !texts.is_empty() && (tagged(&resource).is_some() || xray_only),
                    "{place}: resource {resource:?} names a resource of the stack"
                );
                let logs = actions.iter().all(|a| text(a).starts_with("logs:"));
                // X-Ray's write actions have no resource-level permissions (its IAM page): '*', and nothing else with it.
                let xray = actions.iter().all(|a| ["xray:PutTraceSegments", "xray:PutTelemetryRecords"].contains(&text(a)));
                if xray {
                    assert_eq!(resource.as_str(), Some("*"), "{place}");
                } else if logs {
                    // A log group's ARN ends in :* (its streams); it must be one of ours.
                    let Some(("GetAtt", target)) = tagged(&resource) else { panic!("{place}: logs on {resource:?}") };
                    let group = text(target).split('.').next().unwrap();
                    assert_eq!(t["Resources"][group]["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{place}");
                } else {
                    for s in texts {
                        assert!(!s.contains('*') && !s.contains('?'), "{place}: wildcard resource {s}");
                    }
                }
            }
        }
    }
    // Exactly what the code calls, per function.
    for action in [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:Query",
        "dynamodb:BatchGetItem",
        "dynamodb:DeleteItem",
        "kinesis:ListShards",
        "kinesis:GetRecords",
        "sqs:SendMessage",
        "es:ESHttpPost",
        "es:ESHttpPut",
        "es:ESHttpGet",
    ] {
        assert!(granted.contains(action), "{action} is granted");
    }
    for forbidden in ["dynamodb:Scan", "dynamodb:DeleteTable", "kinesis:PutRecords", "dynamodb:ConditionCheckItem"] {
        assert!(!granted.contains(forbidden), "{forbidden} is not needed");
    }
    // The index template paths granted are the ones the sink puts.
    let mut resources = Vec::new();
    for (_, document) in &documents {
        strings(document, &mut resources);
    }
    // The index template and lifecycle policy paths granted are the ones the sink puts.
    let settings = taxi_core::documents::DocumentSettings {
        min_count: 2,
        pickup_index: "PICKUPS".into(),
        duration_index: "DURATIONS".into(),
        index_retention_days: Some(1),
    };
    let parameter = |path: String| path.replace("PICKUPS", "${PickupIndexName}").replace("DURATIONS", "${DurationIndexName}");
    let templates = taxi_core::documents::index_templates(&settings).into_iter().map(|(name, _)| format!("/_index_template/{name}"));
    let policies = taxi_core::documents::lifecycle_policies(&settings).into_iter().map(|(id, _)| format!("/_plugins/_ism/policies/{id}"));
    // And the names the sink reads before daily indices take them as aliases.
    let names = ["/PICKUPS".to_owned(), "/DURATIONS".to_owned()];
    for path in templates.chain(policies).chain(names) {
        let granted_path = parameter(path);
        assert!(resources.iter().any(|r| r.ends_with(&granted_path)), "{granted_path} is granted");
    }
}

/// Daily indices with a lifecycle policy on a created domain by default (its
/// 10 GiB volume fills in under two months at the reference load), none with 0.
#[test]
fn the_index_retention_reaches_the_closer() {
    let t = template();
    assert_eq!(t["Parameters"]["IndexRetentionDays"]["Default"].as_i64(), Some(30));
    for (days, expected) in [("30", Some(30)), ("0", None), ("400", Some(400))] {
        let env = Stack::new(&t, &[("IndexRetentionDays", days)]).environment("CloseWindowsFunction");
        assert_eq!(close_windows_config(&env).0.unwrap().documents.index_retention_days, expected, "IndexRetentionDays={days}");
    }
}

#[test]
fn the_search_domain_admits_the_closer_role_and_the_dashboard_cidr_only() {
    let t = template();
    let domain = &t["Resources"]["OpenSearchDomain"]["Properties"]["AccessPolicies"];
    let statements = alternatives(&domain["Statement"]);
    assert_eq!(statements.len(), 3);
    for statement in statements {
        assert_eq!(statement["Effect"].as_str(), Some("Allow"));
        let principal = &statement["Principal"]["AWS"];
        match tagged(principal) {
            Some(("GetAtt", role)) => {
                let role = text(role).strip_suffix(".Arn").unwrap();
                assert_eq!(t["Resources"][role]["Type"].as_str(), Some("AWS::IAM::Role"));
                let mut resources = Vec::new();
                strings(&statement["Resource"], &mut resources);
                assert!(resources.iter().all(|r| !r.contains('*')), "the role's grant names its paths: {resources:?}");
            }
            _ => {
                assert_eq!(principal.as_str(), Some("*"));
                let source = &statement["Condition"]["IpAddress"]["aws:SourceIp"];
                let Some([cidr]) = source.as_sequence().map(|s| s.as_slice()) else { panic!("one CIDR: {source:?}") };
                assert!(
                    matches!(tagged(cidr), Some(("Ref", p)) if text(p) == "DashboardClientCidr"),
                    "anyone else only from the dashboard CIDR"
                );
            }
        }
    }
}

#[test]
fn alarms_and_the_dashboard_use_metrics_the_functions_emit() {
    let t = template();
    let mut emitted = BTreeSet::new();
    let mut batch = taxi_core::metrics::BatchMetrics::default();
    for reason in taxi_core::event::InvalidReason::ALL {
        batch.applied.invalid.add(reason, 1);
    }
    let report = taxi_core::closer::CloseReport {
        global: Some(taxi_core::closing::GlobalWatermark {
            watermark: Some(taxi_core::time::EventTime(1_420_866_000)),
            verdicts: Default::default(),
            first_seen: Default::default(),
            all_idle: false,
        }),
        ..Default::default()
    };
    for line in [batch.to_emf("N", "f", 0), taxi_core::metrics::close_report_emf(&report, "N", "f", 0)] {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            emitted.insert(metric["Name"].as_str().unwrap().to_owned());
        }
    }
    let alarms = resources_of_type(&t, "AWS::CloudWatch::Alarm");
    let mut names = BTreeSet::new();
    for (_, alarm) in &alarms {
        let p = &alarm["Properties"];
        let metrics: Vec<&Value> = match p["Metrics"].as_sequence() {
            Some(list) => list.iter().filter_map(|m| m.get("MetricStat").map(|s| &s["Metric"])).collect(),
            None => vec![p],
        };
        for m in metrics {
            let name = text(&m["MetricName"]).to_owned();
            if matches!(tagged(&m["Namespace"]), Some(("Ref", ns)) if text(ns) == "MetricsNamespace") {
                assert!(emitted.contains(&name), "alarm on {name}, which the functions do not emit ({emitted:?})");
            }
            names.insert(name);
        }
    }
    // Besides the failures, what puts data at risk before it is lost: DynamoDB failing
    // (retries, throttling) and the domain's health (red, writes blocked, disk filling).
    for needed in [
        "IteratorAge",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "WatermarkLag",
        "DeadLetters",
        "RetryRequested",
        "WriteThrottleEvents",
        "ReadThrottleEvents",
        "ClusterStatus.red",
        "ClusterIndexWritesBlocked",
        "FreeStorageSpace",
    ] {
        assert!(names.contains(needed), "an alarm on {needed}");
    }
    // The dashboard's own-namespace metrics, too.
    let Some(("Sub", body)) = tagged(&t["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]) else { panic!("a Sub body") };
    let json = text(&body.as_sequence().unwrap()[0]);
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("the dashboard body is JSON");
    let mut checked = 0;
    for widget in dashboard["widgets"].as_array().unwrap() {
        let mut namespace = String::new();
        for metric in widget["properties"]["metrics"].as_array().unwrap() {
            let row = metric.as_array().unwrap();
            if row[0] != "." {
                namespace = row[0].as_str().unwrap().to_owned();
            }
            if namespace == "${Ns}" {
                assert!(emitted.contains(row[1].as_str().unwrap()), "dashboard metric {}", row[1]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked} own metrics on the dashboard");
}

#[test]
fn outputs_name_the_stream_the_table_the_endpoints_and_the_replay_command() {
    let t = template();
    let outputs = t["Outputs"].as_mapping().unwrap();
    for name in ["StreamName", "StreamArn", "TableName", "SearchEndpoint", "OpenSearchDashboardsUrl", "ReplayCommand"] {
        assert!(outputs.contains_key(name), "output {name}");
    }
    let Some(("Sub", command)) = tagged(&t["Outputs"]["ReplayCommand"]["Value"]) else { panic!("a Sub") };
    let command = text(command);
    assert!(command.starts_with("taxi-pipeline replay ") && command.contains("--stream ${TripStream}"), "{command}");
    let input = command.split_whitespace().nth(2).unwrap();
    assert!(workspace_root().join(input).is_file(), "the replayed file {input} is in the repository");
}

/// The stack's `StatusCommand` is a valid `taxi-pipeline status` command line
/// that judges shards by exactly the rules the close-windows function reads,
/// in every watermark mode and window shape.
#[test]
fn the_status_command_output_judges_by_the_close_windows_functions_rules() {
    let t = template();
    for overrides in [
        &[][..],
        &[("WatermarkMode", "bounded"), ("IdleShardTimeoutSeconds", "90"), ("AdvanceWhenQuiet", "false")][..],
        &[("WindowSizeSeconds", "1800"), ("WindowSlideSeconds", "600"), ("PickupIndexName", "hot"), ("MinPickupCount", "5")][..],
    ] {
        let stack = Stack::new(&t, overrides);
        let command = stack.eval(&t["Outputs"]["StatusCommand"]["Value"]).expect("a command");
        let cli = taxi_pipeline::args::Cli::try_parse_from(command.split_whitespace()).unwrap_or_else(|e| panic!("{command}: {e}"));
        let taxi_pipeline::args::Command::Status(args) = cli.command else { panic!("{command}: not status") };
        let env = stack.environment("CloseWindowsFunction");
        assert_eq!((args.table.as_str(), args.stream.as_str()), (env["TABLE_NAME"].as_str(), env["STREAM_NAME"].as_str()));
        let given: BTreeMap<String, String> = args.settings.iter().cloned().collect();
        let (expected, asked) = read_with(&env, |lookup| taxi_pipeline::status::Rules::from_lookup(lookup).map_err(|e| e.to_string()));
        let (from_command, _) = read_with(&given, |lookup| taxi_pipeline::status::Rules::from_lookup(lookup).map_err(|e| e.to_string()));
        assert_eq!(from_command, expected, "{overrides:?}");
        let missing: Vec<&String> = asked.iter().filter(|name| env.contains_key(*name) && !given.contains_key(*name)).collect();
        assert!(missing.is_empty(), "the function sets {missing:?}, the command does not: {command}");
    }
}

/// Alarm names of the stack, and whether each notifies the alarm topic when an e-mail is set.
fn alarm_actions(t: &Value) -> BTreeMap<String, bool> {
    let stack = Stack::new(t, &[("AlarmEmail", "ops@example.com")]);
    resources_of_type(t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(name, alarm)| {
            let actions = match tagged(&alarm["Properties"]["AlarmActions"]) {
                Some(("If", args)) => {
                    let args = args.as_sequence().unwrap();
                    if stack.condition(text(&args[0])) {
                        args[1].clone()
                    } else {
                        args[2].clone()
                    }
                }
                _ => alarm["Properties"]["AlarmActions"].clone(),
            };
            let notifies = alternatives(&actions).iter().any(|a| matches!(tagged(a), Some(("Ref", r)) if text(r) == "AlarmTopic"));
            (name.to_owned(), notifies)
        })
        .collect()
}

/// Discards lose data: a batch the mapping gives up on is below the shard's
/// applied sequence and can never be aggregated again. Bad input never fails
/// a batch, only infrastructure does, so by default the shard waits (-1 for
/// both limits) and the iterator-age alarm pages; a limit a user sets is
/// documented as a loss, and its alarm says so.
#[test]
fn the_mapping_blocks_the_shard_instead_of_discarding_and_a_discard_is_called_a_loss() {
    let t = template();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let esm = &t["Resources"]["AggregateFunction"]["Properties"]["Events"]["Trips"]["Properties"];
    for property in ["MaximumRetryAttempts", "MaximumRecordAgeInSeconds"] {
        let Some(("Ref", parameter)) = tagged(&esm[property]) else { panic!("{property} is a parameter") };
        let parameter = text(parameter);
        let p = &t["Parameters"][parameter];
        assert_eq!(p["Default"].as_i64(), Some(-1), "{parameter}: no limit by default");
        assert_eq!(p["MinValue"].as_i64(), Some(-1), "{parameter}: -1 allowed");
        assert!(text(&p["Description"]).contains("DISCARDS"), "{parameter}: a limit is described as the loss it is");
        let row = readme.lines().find(|l| l.starts_with(&format!("| `{parameter}` |"))).expect("a README row");
        assert!(row.contains("| -1 |") && row.contains("lost"), "{parameter}: the README says a limit loses trips: {row}");
    }
    let Some(("Ref", age)) = tagged(&esm["MaximumRecordAgeInSeconds"]) else { unreachable!() };
    assert!(t["Parameters"][text(age)]["MaxValue"].as_i64().unwrap() <= 604_800);
    let alarms = alarm_actions(&t);
    assert_eq!(alarms.get("IteratorAgeAlarm"), Some(&true), "a blocked shard pages through the iterator age");
    assert_eq!(alarms.get("FailureQueueAlarm"), Some(&true), "a discard pages");
    assert!(text(&t["Resources"]["FailureQueueAlarm"]["Properties"]["AlarmDescription"]).contains("LOST"));
}

/// CloudWatch can publish to an encrypted topic only if the key policy lets
/// it, which the AWS-managed SNS key's does not: the topic's key is one of the
/// stack's, granting CloudWatch what publishing needs, and every alarm notifies it.
#[test]
fn alarm_e_mails_can_be_delivered() {
    let t = template();
    let topics = resources_of_type(&t, "AWS::SNS::Topic");
    assert_eq!(topics.len(), 1);
    for (name, topic) in topics {
        let key = &topic["Properties"]["KmsMasterKeyId"];
        if key.is_null() {
            continue; // no SSE: CloudWatch can publish
        }
        let Some(("Ref", key)) = tagged(key) else { panic!("{name}: a key of the stack, not an AWS-managed alias: {key:?}") };
        let key = &t["Resources"][text(key)];
        assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"), "{name}");
        assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true), "{name}: key rotation");
        let granted: BTreeSet<String> = alternatives(&key["Properties"]["KeyPolicy"]["Statement"])
            .iter()
            .filter(|s| s["Effect"].as_str() == Some("Allow") && s["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com"))
            .flat_map(|s| alternatives(&s["Action"]))
            .map(|a| text(&a).to_owned())
            .collect();
        for needed in ["kms:Decrypt", "kms:GenerateDataKey"] {
            assert!(
                granted.iter().any(|g| g == needed || (g.ends_with('*') && needed.starts_with(g.trim_end_matches('*')))),
                "{name}: CloudWatch may {needed}: {granted:?}"
            );
        }
    }
    for (alarm, notifies) in alarm_actions(&t) {
        assert!(notifies, "{alarm} reaches a person when AlarmEmail is set");
    }
}

/// Lambda files a JSON log line without a "level" key as INFO
/// (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html),
/// and drops it under a stricter application log level: the EMF lines, the only
/// source of the custom metrics, must pass at every level the stack allows. The
/// START / REPORT system lines (init duration, max memory used) are INFO too.
#[test]
fn metric_lines_and_report_lines_survive_every_allowed_log_level() {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rank = |level: &str| LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level)).unwrap_or_else(|| panic!("level {level}"));
    let t = template();
    let batch = taxi_core::metrics::BatchMetrics::default();
    let report = taxi_core::closer::CloseReport::default();
    for line in [batch.to_emf("N", "f", 0), taxi_core::metrics::close_report_emf(&report, "N", "f", 0)] {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let level =
            line.get("level").and_then(|l| l.as_str()).filter(|l| LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l))).unwrap_or("INFO");
        for allowed in alternatives(&t["Parameters"]["LogLevel"]["AllowedValues"]) {
            assert!(rank(level) >= rank(text(&allowed)), "LogLevel {allowed:?} drops the EMF lines (level {level})");
        }
    }
    for function in ["AggregateFunction", "CloseWindowsFunction"] {
        let logging = &t["Resources"][function]["Properties"]["LoggingConfig"];
        assert_eq!(logging["LogFormat"].as_str(), Some("JSON"), "{function}: level filtering needs JSON");
        assert!(matches!(tagged(&logging["ApplicationLogLevel"]), Some(("Ref", p)) if text(p) == "LogLevel"), "{function}");
        let system = text(&logging["SystemLogLevel"]);
        assert!(rank(system) <= rank("INFO"), "{function}: SystemLogLevel {system} drops the START and REPORT lines");
    }
}

/// OpenSearch Dashboards for a CIDR: never a wide one, only the Dashboards
/// paths (no index writes), and the domain's error logs published.
#[test]
fn the_dashboard_grant_is_narrow_and_the_domain_logs_its_errors() {
    let t = template();
    let pattern = regex_lite::Regex::new(text(&t["Parameters"]["DashboardClientCidr"]["AllowedPattern"])).expect("a regular expression");
    for good in ["", "203.0.113.7/32", "198.51.100.0/24"] {
        assert!(pattern.is_match(good), "{good:?} is accepted");
    }
    for wide in ["0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.51.0.0/23"] {
        assert!(!pattern.is_match(wide), "{wide} is refused");
    }
    let domain = &t["Resources"]["OpenSearchDomain"]["Properties"];
    let anonymous: Vec<Value> =
        alternatives(&domain["AccessPolicies"]["Statement"]).into_iter().filter(|s| s["Principal"]["AWS"].as_str() == Some("*")).collect();
    assert_eq!(anonymous.len(), 1);
    let actions: BTreeSet<String> = alternatives(&anonymous[0]["Action"]).iter().map(|a| text(a).to_owned()).collect();
    for write in ["es:ESHttpPut", "es:ESHttpDelete", "es:ESHttpPatch", "es:*"] {
        assert!(!actions.contains(write), "anonymous {write}");
    }
    let mut resources = Vec::new();
    strings(&anonymous[0]["Resource"], &mut resources);
    assert!(!resources.is_empty());
    for resource in resources {
        let path = resource.split_once("domain/${OpenSearchDomainName}").map(|(_, p)| p).unwrap_or_else(|| panic!("{resource}"));
        assert!(path == "/_dashboards" || path == "/_dashboards/*", "anonymous access to {path}");
    }
    let errors = &domain["LogPublishingOptions"]["ES_APPLICATION_LOGS"];
    assert_eq!(errors["Enabled"].as_bool(), Some(true), "error logs");
    let Some(("GetAtt", group)) = tagged(&errors["CloudWatchLogsLogGroupArn"]) else { panic!("a log group of the stack") };
    let group = text(group).split('.').next().unwrap();
    assert_eq!(t["Resources"][group]["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    assert_eq!(resources_of_type(&t, "AWS::Logs::ResourcePolicy").len(), 1, "OpenSearch may write to it");
}

/// Fine-grained access control is a choice, off by default (it cannot be turned
/// off again, and the closer's role needs a mapping the stack cannot make):
/// on, the domain has an internal master user generated in Secrets Manager
/// and passed only by dynamic reference, and publishes its audit logs to a
/// log group of the stack that OpenSearch may write to.
#[test]
fn fine_grained_access_control_has_a_generated_master_user_and_audit_logs() {
    let t = template();
    let parameter = &t["Parameters"]["FineGrainedAccessControl"];
    assert_eq!(parameter["Default"].as_str(), Some("false"));
    let allowed: Vec<&str> = parameter["AllowedValues"].as_sequence().expect("AllowedValues").iter().map(text).collect();
    assert_eq!(allowed, ["true", "false"]);

    let off = Stack::new(&t, &[]);
    let domain = off.chosen(&t["Resources"]["OpenSearchDomain"]["Properties"]).unwrap();
    assert!(domain["AdvancedSecurityOptions"].is_null(), "off by default");
    assert!(domain["LogPublishingOptions"]["AUDIT_LOGS"].is_null());

    let on = Stack::new(&t, &[("FineGrainedAccessControl", "true"), ("DashboardClientCidr", "203.0.113.7/32")]);
    assert!(on.condition("FineGrained"));
    let domain = on.chosen(&t["Resources"]["OpenSearchDomain"]["Properties"]).unwrap();
    let security = &domain["AdvancedSecurityOptions"];
    assert_eq!((security["Enabled"].as_bool(), security["InternalUserDatabaseEnabled"].as_bool()), (Some(true), Some(true)));
    assert_eq!(domain["EncryptionAtRestOptions"]["Enabled"].as_bool(), Some(true), "fine-grained access control requires it");
    assert_eq!(domain["NodeToNodeEncryptionOptions"]["Enabled"].as_bool(), Some(true), "fine-grained access control requires it");
    let mut secret = None;
    for (field, key) in [("MasterUserName", "username"), ("MasterUserPassword", "password")] {
        let Some(("Sub", reference)) = tagged(&security["MasterUserOptions"][field]) else { panic!("{field}: a dynamic reference") };
        let reference = text(reference);
        let name = reference
            .strip_prefix("{{resolve:secretsmanager:${")
            .and_then(|r| r.strip_suffix(&format!("}}:SecretString:{key}}}}}")))
            .unwrap_or_else(|| panic!("{field}: {reference}"));
        assert_eq!(*secret.get_or_insert(name.to_owned()), name, "both from one secret");
    }
    let secret = &t["Resources"][secret.unwrap().as_str()];
    assert_eq!(secret["Type"].as_str(), Some("AWS::SecretsManager::Secret"));
    assert!(secret["Properties"]["SecretString"].is_null(), "generated, never written in the template");
    let generated = &secret["Properties"]["GenerateSecretString"];
    assert_eq!(generated["GenerateStringKey"].as_str(), Some("password"));
    assert!(text(&generated["SecretStringTemplate"]).contains("\"username\""));
    assert!(generated["PasswordLength"].as_i64().is_some_and(|n| (8..=128).contains(&n)), "OpenSearch's password length");
    assert_eq!(generated["RequireEachIncludedType"].as_bool(), Some(true), "OpenSearch wants every kind of character");

    let audit = &domain["LogPublishingOptions"]["AUDIT_LOGS"];
    assert_eq!(audit["Enabled"].as_bool(), Some(true), "audit logs");
    let Some(("GetAtt", group)) = tagged(&audit["CloudWatchLogsLogGroupArn"]) else { panic!("a log group of the stack") };
    let group = text(group).split('.').next().unwrap();
    assert_eq!(t["Resources"][group]["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    let retention = tagged(&t["Resources"][group]["Properties"]["RetentionInDays"]);
    assert!(matches!(retention, Some(("Ref", r)) if text(r) == "LogRetentionDays"), "kept as long as the other logs");
    let policy = &t["Resources"]["OpenSearchLogPolicy"];
    let document: serde_json::Value =
        serde_json::from_str(&on.eval(&policy["Properties"]["PolicyDocument"]).expect("a policy document")).expect("JSON");
    let statement = &document["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "es.amazonaws.com");
    let resources: Vec<&str> = statement["Resource"].as_array().expect("a list").iter().filter_map(|r| r.as_str()).collect();
    assert!(resources.contains(&format!("{group}.Arn").as_str()), "OpenSearch may write the audit logs: {resources:?}");

    // Without a created domain or a way in for the master user, a rule refuses the stack.
    let rule = &t["Rules"]["FineGrainedAccessControlIsForACreatedDomainWithAWayIn"];
    let asserted: Vec<String> = rule["Assertions"].as_sequence().unwrap().iter().map(|a| format!("{:?}", a["Assert"])).collect();
    assert!(asserted.iter().any(|a| a.contains("CreateOpenSearchDomain")) && asserted.iter().any(|a| a.contains("DashboardClientCidr")));
    let outputs = t["Outputs"]["OpenSearchMasterUserSecretArn"].clone();
    assert_eq!(outputs["Condition"].as_str(), Some("FineGrained"), "the secret's ARN, not its value");
}

/// A crashed close pass is not retried on top of the next scheduled one.
#[test]
fn the_close_schedule_does_not_retry_a_crashed_pass() {
    let t = template();
    let close = &t["Resources"]["CloseWindowsFunction"]["Properties"];
    assert_eq!(close["EventInvokeConfig"]["MaximumRetryAttempts"].as_i64(), Some(0), "no asynchronous retries");
    let age = close["EventInvokeConfig"]["MaximumEventAgeInSeconds"].as_i64().expect("a maximum event age");
    assert!((60..=120).contains(&age), "an event older than the schedule's period is dropped: {age}");
    for (name, event) in close["Events"].as_mapping().unwrap() {
        if event["Type"].as_str() == Some("Schedule") {
            assert_eq!(event["Properties"]["RetryPolicy"]["MaximumRetryAttempts"].as_i64(), Some(0), "{name:?}");
        }
    }
}

/// Amazon OpenSearch Service refuses request bodies over 10 MiB on the small
/// and medium instance types the template offers.
#[test]
fn bulk_requests_fit_every_offered_domain() {
    let t = template();
    assert!(t["Parameters"]["BulkMaxBytes"]["MaxValue"].as_i64().unwrap() <= 10 * 1024 * 1024);
}

/// The README's deploy path is `make build`, `make deploy`, `make delete`: the
/// pinned SAM CLI of `make deploy-tools` (not on `PATH`), stack parameters
/// where both `sam build` and `sam deploy` read them, and a check that the
/// built binaries are for the stack's `Architecture`.
#[test]
fn the_deploy_path_is_make_targets_sharing_one_set_of_parameters() {
    let root = workspace_root();
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let makefile = read("Makefile");
    let recipe = |target: &str| -> Vec<String> {
        let mut lines = makefile.lines().skip_while(|l| !l.starts_with(&format!("{target}:"))).skip(1);
        let mut recipe = Vec::new();
        while let Some(line) = lines.next().filter(|l| l.starts_with('\t')) {
            recipe.push(line.trim().to_owned());
        }
        assert!(!recipe.is_empty(), "a make target {target}");
        recipe
    };
    for target in ["build", "deploy", "delete"] {
        assert!(recipe(target).iter().any(|l| l.starts_with(&format!("$(SAM) {target}"))), "make {target} runs the pinned sam {target}");
    }
    assert!(makefile.contains("SAM := SAM_CLI_TELEMETRY=0 PATH=\"$(CURDIR)/$(DEPLOY_TOOLS)/bin:$$PATH\" sam"));
    for target in ["build", "deploy"] {
        assert!(
            recipe(target).iter().any(|l| l.contains("deploy_check.py architecture")),
            "make {target} checks the binaries' architecture"
        );
    }
    // samconfig.toml: parameter overrides only where build and deploy both read them.
    let mut section = String::new();
    let mut global_overrides = false;
    for line in read("samconfig.toml").lines() {
        if line.starts_with('[') {
            section = line.trim().to_owned();
        } else if line.trim_start().starts_with("parameter_overrides") {
            assert_eq!(section, "[default.global.parameters]", "parameter_overrides under {section}, which only one command reads");
            global_overrides = true;
        }
    }
    assert!(global_overrides, "samconfig.toml shows where the parameters go");
    // The README's deploy section runs no bare `sam` (not on a new user's PATH) and names the minimum version.
    let readme = read("README.md");
    let deploy = readme.split("## Deploy on AWS").nth(1).expect("a deploy section").split("\n## ").next().unwrap();
    for line in deploy.lines().map(str::trim) {
        assert!(!(line.starts_with("sam ") || line.starts_with("$ sam ")), "a bare sam command in the README: {line}");
    }
    assert!(deploy.contains("make build") && deploy.contains("make deploy") && deploy.contains("make delete"));
    let pinned =
        read("requirements-deploy.txt").lines().find_map(|l| l.strip_prefix("aws-sam-cli==")).expect("a pinned SAM CLI").to_owned();
    assert!(deploy.contains(&format!("AWS SAM CLI {pinned}")), "the README states the SAM CLI version {pinned}");
    // Build outputs are ignored wherever a target/ appears (cargo lambda, sam build).
    assert!(read(".gitignore").lines().any(|l| l.trim() == "target/"), ".gitignore ignores target/ at any depth");
}

/// A basic-auth password is read by the function at start-up from the secret's
/// ARN (the one resource its role may read), never resolved into its
/// environment, where anyone who may read the function's configuration sees it.
#[test]
fn the_basic_auth_secret_is_read_at_start_up_not_resolved_into_the_environment() {
    let t = template();
    // The one dynamic reference is the domain's master user (fine-grained access
    // control), which the OpenSearch API takes at creation and never returns.
    let mut elsewhere = t.clone();
    let master = elsewhere["Resources"]["OpenSearchDomain"]["Properties"]
        .as_mapping_mut()
        .unwrap()
        .remove("AdvancedSecurityOptions")
        .expect("the fine-grained access control option");
    let mut all = Vec::new();
    strings(&elsewhere, &mut all);
    assert!(!all.iter().any(|s| s.contains("{{resolve:secretsmanager")), "no other dynamic reference to a secret");
    let mut masters = Vec::new();
    strings(&master, &mut masters);
    assert_eq!(masters.iter().filter(|s| s.contains("{{resolve:secretsmanager")).count(), 2, "the master user's name and password");
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:taxi/search-AbCdEf";
    let basic = [
        ("CreateOpenSearchDomain", "false"),
        ("EsEndpoint", "https://search.example.com"),
        ("EsAuth", "basic"),
        ("EsBasicAuthSecret", arn),
    ];
    let stack = Stack::new(&t, &basic);
    let env = stack.environment("CloseWindowsFunction");
    assert_eq!(env.get("ES_BASIC_AUTH_SECRET").map(String::as_str), Some(arn));
    assert!(!env.contains_key("ES_PASSWORD") && !env.contains_key("ES_USERNAME"));
    let (config, _) = close_windows_config(&env);
    assert_eq!(config.unwrap().search.auth, taxi_aws::config::SearchAuthMode::BasicFromSecret { secret_id: arn.to_owned() });
    // The role may read that secret, and only with basic auth.
    let role = &t["Resources"]["CloseWindowsRole"]["Properties"]["Policies"];
    let grants: Vec<(String, Value)> = role
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| match tagged(p) {
            Some(("If", args)) => {
                let args = args.as_sequence().unwrap();
                Some((text(&args[0]).to_owned(), args[1].clone()))
            }
            _ => None,
        })
        .filter(|(_, p)| {
            alternatives(&p["PolicyDocument"]["Statement"]).iter().any(|s| s["Action"].as_str() == Some("secretsmanager:GetSecretValue"))
        })
        .collect();
    assert_eq!(grants.len(), 1, "one grant of GetSecretValue");
    assert!(Stack::new(&t, &basic).condition(&grants[0].0), "granted with basic auth");
    assert!(!Stack::new(&t, &[]).condition(&grants[0].0), "and only then");
    let statement = &alternatives(&grants[0].1["PolicyDocument"]["Statement"])[0];
    assert!(matches!(tagged(&statement["Resource"]), Some(("Ref", p)) if text(p) == "EsBasicAuthSecret"), "on the secret's ARN only");
    let pattern = regex_lite::Regex::new(text(&t["Parameters"]["EsBasicAuthSecret"]["AllowedPattern"])).unwrap();
    assert!(pattern.is_match(arn) && pattern.is_match(""));
    assert!(!pattern.is_match("taxi/search"), "a name is refused: the grant needs the ARN");
    // Basic auth over http:// is refused at start-up.
    let plain = Stack::new(
        &t,
        &[
            ("CreateOpenSearchDomain", "false"),
            ("EsEndpoint", "http://search.example.com"),
            ("EsAuth", "basic"),
            ("EsBasicAuthSecret", arn),
        ],
    );
    let (config, _) = close_windows_config(&plain.environment("CloseWindowsFunction"));
    assert!(config.unwrap_err().contains("in clear"));
}

/// Tags on every resource from one place (the stack's tags, which CloudFormation
/// propagates), and X-Ray as an option that grants what tracing needs.
#[test]
fn stack_tags_and_optional_tracing() {
    let t = template();
    let samconfig = std::fs::read_to_string(workspace_root().join("samconfig.toml")).expect("samconfig.toml");
    let deploy = samconfig.split("\n[default.deploy.parameters]\n").nth(1).expect("deploy settings").split("\n[").next().unwrap();
    assert!(deploy.lines().any(|l| l.starts_with("tags = ")), "stack tags for sam deploy");
    assert!(matches!(tagged(&t["Globals"]["Function"]["Tracing"]), Some(("Ref", p)) if text(p) == "Tracing"));
    assert_eq!(t["Parameters"]["Tracing"]["Default"].as_str(), Some("PassThrough"));
    for role in ["AggregateRole", "CloseWindowsRole"] {
        let granted = |overrides: &[(&str, &str)]| -> bool {
            let stack = Stack::new(&t, overrides);
            t["Resources"][role]["Properties"]["Policies"].as_sequence().unwrap().iter().any(|p| {
                let policy = match tagged(p) {
                    Some(("If", args)) => {
                        let args = args.as_sequence().unwrap();
                        if stack.condition(text(&args[0])) {
                            args[1].clone()
                        } else {
                            args[2].clone()
                        }
                    }
                    _ => p.clone(),
                };
                let mut actions = Vec::new();
                strings(&policy, &mut actions);
                actions.iter().any(|a| a == "xray:PutTraceSegments")
            })
        };
        assert!(granted(&[("Tracing", "Active")]), "{role} may write traces when tracing is active");
        assert!(!granted(&[]), "{role}: no X-Ray grant without tracing");
    }
}

/// A replica count that matches the domain: 0 on the default one-node domain
/// (a replica there is never assigned: the cluster stays yellow), refused by a
/// rule otherwise, and given to the closer's index templates.
#[test]
fn the_replica_count_matches_the_domain() {
    let t = template();
    assert_eq!(t["Parameters"]["IndexReplicas"]["Default"].as_i64(), Some(0));
    assert_eq!(t["Parameters"]["OpenSearchInstanceCount"]["Default"].as_i64(), Some(1));
    let env = Stack::new(&t, &[("IndexReplicas", "2"), ("OpenSearchInstanceCount", "3")]).environment("CloseWindowsFunction");
    assert_eq!(close_windows_config(&env).0.unwrap().index_replicas, Some(2));
    let rule = &t["Rules"]["OneNodeHasNoReplicas"];
    let mut texts = Vec::new();
    strings(rule, &mut texts);
    for name in ["CreateOpenSearchDomain", "OpenSearchInstanceCount", "IndexReplicas"] {
        assert!(texts.iter().any(|s| s == name), "the rule reads {name}");
    }
}
