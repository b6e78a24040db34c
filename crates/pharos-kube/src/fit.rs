//! Whether a gang fits the cluster's nodes now: each schedulable node's allocatable
//! resources less the requests of the pods bound to it, the learners placed first-fit.
//! This is the admission check before a suspended Job is let go (Kubernetes' own
//! scheduler then places the pods; what it sees is what was checked).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Parses a Kubernetes quantity (`500m`, `2`, `1.5Gi`, `128974848`, `1e3`, `4k`).
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    // An exponent form (1e3) has no suffix after it.
    let value: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    value.is_finite().then_some(value * mult)
}

fn amount(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> f64 {
    map.and_then(|m| m.get(key))
        .and_then(|q| quantity(&q.0))
        .unwrap_or(0.0)
}

/// What one learner asks of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    pub cpus: f64,
    pub memory: f64,
    /// The GPU resource's name and count.
    pub gpus: Option<(String, f64)>,
    /// A node label and the value it must have (the GPU model).
    pub selector: Option<(String, String)>,
}

/// How many learners of `need` each usable node can take now, by node name.
pub fn room(nodes: &[Node], pods: &[Pod], need: &Need) -> BTreeMap<String, u32> {
    let mut used: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for p in pods {
        let (Some(spec), phase) = (
            p.spec.as_ref(),
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
        ) else {
            continue;
        };
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(node) = spec.node_name.as_deref() else {
            continue;
        };
        let u = used.entry(node).or_default();
        for c in spec.containers.iter() {
            let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            u.0 += amount(req, "cpu");
            u.1 += amount(req, "memory");
            if let Some((g, _)) = &need.gpus {
                // Extended resources are requested through limits (requests equal them).
                let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
                u.2 += amount(req, g).max(amount(lim, g));
            }
        }
    }
    let mut out = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let spec = n.spec.as_ref();
        if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            continue;
        }
        // A taint keyed by the GPU resource is tolerated by pods that request it
        // (Kubernetes adds that toleration itself); any other keeps learners off.
        let gpu_key = need.gpus.as_ref().map(|g| g.0.as_str());
        let tainted = spec.and_then(|s| s.taints.as_ref()).is_some_and(|ts| {
            ts.iter().any(|t| {
                (t.effect == "NoSchedule" || t.effect == "NoExecute")
                    && Some(t.key.as_str()) != gpu_key
            })
        });
        if tainted {
            continue;
        }
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_none_or(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            continue;
        }
        if let Some((k, v)) = &need.selector {
            let labels = n.metadata.labels.as_ref();
            if labels.and_then(|l| l.get(k)) != Some(v) {
                continue;
            }
        }
        let alloc = status.and_then(|s| s.allocatable.as_ref());
        let u = used.get(name.as_str()).copied().unwrap_or_default();
        let fits = |free: f64, want: f64| -> f64 {
            if want <= 0.0 {
                f64::INFINITY
            } else {
                ((free + 1e-9) / want).floor().max(0.0)
            }
        };
        let mut k = fits(amount(alloc, "cpu") - u.0, need.cpus)
            .min(fits(amount(alloc, "memory") - u.1, need.memory));
        if let Some((g, count)) = &need.gpus {
            k = k.min(fits(amount(alloc, g) - u.2, *count));
        }
        let k = if k.is_finite() { k as u32 } else { u32::MAX };
        out.insert(name, k);
    }
    out
}

/// Whether `learners` learners of `need` fit the nodes now; else what is short, in
/// words.
pub fn gang_fits(nodes: &[Node], pods: &[Pod], need: &Need, learners: u32) -> Result<(), String> {
    let room = room(nodes, pods, need);
    let total: u64 = room.values().map(|k| *k as u64).sum();
    if total >= learners as u64 {
        return Ok(());
    }
    let per_node: Vec<String> = room.iter().map(|(n, k)| format!("{n}: {k}")).collect();
    Err(format!(
        "{learners} learner(s) of {} vCPU, {:.0} MiB{} each; the nodes have room for {total} ({})",
        need.cpus,
        need.memory / 1048576.0,
        need.gpus
            .as_ref()
            .map(|(g, c)| format!(", {c} {g}"))
            .unwrap_or_default(),
        if per_node.is_empty() {
            "no usable node".to_string()
        } else {
            per_node.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1Gi"), Some(1073741824.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("1.5Ki"), Some(1536.0));
        assert_eq!(quantity("12Q"), None);
        assert_eq!(quantity("x"), None);
    }

    fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        if let Some(o) = extra.as_object() {
            for (k, x) in o {
                match k.as_str() {
                    "labels" => v["metadata"]["labels"] = x.clone(),
                    "gpus" => v["status"]["allocatable"]["nvidia.com/gpu"] = x.clone(),
                    "spec" => v["spec"] = x.clone(),
                    _ => {}
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(node: &str, cpu: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn a_gang_fits_only_when_every_learner_has_a_node() {
        let nodes = [
            node("a", "2", "8Gi", json!({})),
            node("b", "2", "8Gi", json!({})),
        ];
        let need = Need {
            cpus: 2.0,
            memory: 1073741824.0,
            gpus: None,
            selector: None,
        };
        assert!(gang_fits(&nodes, &[], &need, 2).is_ok());
        // Another pod holds 1.5 vCPU of node a: one learner fits, not two.
        let busy = [pod("a", "1500m", "Running")];
        let err = gang_fits(&nodes, &busy, &need, 2).unwrap_err();
        assert!(err.contains("room for 1") && err.contains("a: 0"), "{err}");
        // Finished pods hold nothing.
        assert!(gang_fits(&nodes, &[pod("a", "1500m", "Succeeded")], &need, 2).is_ok());
        // Cordoned and tainted nodes take nothing.
        let cordoned = [
            node("a", "2", "8Gi", json!({"spec": {"unschedulable": true}})),
            node(
                "b",
                "4",
                "8Gi",
                json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            ),
        ];
        assert!(gang_fits(&cordoned, &[], &need, 1).is_err());
    }

    #[test]
    fn gpus_and_the_gpu_model_label_count() {
        let nodes = [
            node(
                "a",
                "8",
                "32Gi",
                // GPU nodes are often tainted by their resource: tolerated.
                json!({"gpus": "2", "labels": {"gpu": "a100"},
                       "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}),
            ),
            node(
                "b",
                "8",
                "32Gi",
                json!({"gpus": "4", "labels": {"gpu": "t4"}}),
            ),
        ];
        let need = Need {
            cpus: 1.0,
            memory: 0.0,
            gpus: Some(("nvidia.com/gpu".into(), 1.0)),
            selector: Some(("gpu".into(), "a100".into())),
        };
        let r = room(&nodes, &[], &need);
        assert_eq!(r.get("a"), Some(&2));
        assert!(!r.contains_key("b"));
        assert!(gang_fits(&nodes, &[], &need, 3).is_err());
    }
}
