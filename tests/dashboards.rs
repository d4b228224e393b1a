//! The shipped dashboard objects hang together: every line is a saved object,
//! every reference resolves inside the file, and every field a visualization
//! uses exists in the index templates the closer puts.

use std::collections::BTreeSet;

use serde_json::Value;
use taxi_core::documents::{index_templates, DocumentSettings};
use taxi_integration_tests::workspace_root;

fn mapped_fields() -> BTreeSet<String> {
    index_templates(&DocumentSettings::default())
        .into_iter()
        .flat_map(|(_, body)| body["template"]["mappings"]["properties"].as_object().unwrap().keys().cloned().collect::<Vec<_>>())
        .collect()
}

/// Values of `field` (and `geoField`) keys anywhere in the object, including in the JSON that
/// saved objects embed as strings; `id` values are collected apart (TSVB math
/// variables name metric ids in a `field` key).
fn walk(value: &Value, fields: &mut BTreeSet<String>, ids: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("field" | "geoField", Value::String(f)) => {
                        fields.insert(f.clone());
                    }
                    ("id", Value::String(i)) => {
                        ids.insert(i.clone());
                    }
                    _ => walk(v, fields, ids),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, fields, ids)),
        Value::String(text) if text.starts_with('{') || text.starts_with('[') => {
            if let Ok(embedded) = serde_json::from_str::<Value>(text) {
                walk(&embedded, fields, ids);
            }
        }
        _ => {}
    }
}

fn fields_used(object: &Value) -> BTreeSet<String> {
    let (mut fields, mut ids) = (BTreeSet::new(), BTreeSet::new());
    walk(object, &mut fields, &mut ids);
    fields.difference(&ids).cloned().collect()
}

#[test]
fn saved_objects_are_consistent_for_both_products() {
    let mapped = mapped_fields();
    for file in ["opensearch-dashboards.ndjson", "kibana.ndjson"] {
        let text = std::fs::read_to_string(workspace_root().join("dashboards").join(file)).unwrap();
        let objects: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {e}"))).collect();
        let ids: BTreeSet<(String, String)> =
            objects.iter().map(|o| (o["type"].as_str().unwrap().to_owned(), o["id"].as_str().unwrap().to_owned())).collect();
        assert!(ids.contains(&("dashboard".into(), "taxi-dashboard".into())), "{file} has the dashboard");
        for object in &objects {
            for reference in object["references"].as_array().into_iter().flatten() {
                let target = (reference["type"].as_str().unwrap().to_owned(), reference["id"].as_str().unwrap().to_owned());
                assert!(ids.contains(&target), "{file}: {} refers to missing {target:?}", object["id"]);
            }
            for field in fields_used(object) {
                assert!(mapped.contains(&field), "{file}: {} uses unmapped field {field}", object["id"]);
            }
        }
        let used: BTreeSet<String> = objects.iter().flat_map(fields_used).collect();
        for needed in ["pickup_count", "location", "sum_trip_duration", "trip_count"] {
            assert!(used.contains(needed), "{file} uses {needed}");
        }
    }
}
