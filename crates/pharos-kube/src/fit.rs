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

/// The amount of `key` in a map of quantities (requests, limits, allocatable); 0 if
/// absent or unreadable.
pub fn amount(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> f64 {
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

/// What one usable node has free now.
#[derive(Debug, Clone)]
pub struct Free {
    pub name: String,
    cpus: f64,
    memory: f64,
    gpus: f64,
    labels: BTreeMap<String, String>,
    /// Its only NoSchedule/NoExecute taints are keyed by the GPU resource (tolerated
    /// by pods that request GPUs, and only by them).
    gpu_tainted: bool,
}

/// The schedulable, ready nodes (no taint but the GPU resource's), each with its
/// allocatable resources less the requests of the pods bound to it.
pub fn free(nodes: &[Node], pods: &[Pod], gpu_resource: &str) -> Vec<Free> {
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
            // Extended resources are requested through limits (requests equal them).
            let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            u.2 += amount(req, gpu_resource).max(amount(lim, gpu_resource));
        }
    }
    let mut out = Vec::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let spec = n.spec.as_ref();
        if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            continue;
        }
        let hard: Vec<&str> = spec
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                    .map(|t| t.key.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if hard.iter().any(|k| *k != gpu_resource) {
            continue;
        }
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_none_or(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            continue;
        }
        let alloc = status.and_then(|s| s.allocatable.as_ref());
        let u = used.get(name.as_str()).copied().unwrap_or_default();
        out.push(Free {
            cpus: amount(alloc, "cpu") - u.0,
            memory: amount(alloc, "memory") - u.1,
            gpus: amount(alloc, gpu_resource) - u.2,
            labels: n.metadata.labels.clone().unwrap_or_default(),
            gpu_tainted: !hard.is_empty(),
            name,
        });
    }
    out
}

/// How many learners of `need` the node can take.
fn count(f: &Free, need: &Need) -> u32 {
    if f.gpu_tainted && need.gpus.is_none() {
        return 0;
    }
    if let Some((k, v)) = &need.selector
        && f.labels.get(k) != Some(v)
    {
        return 0;
    }
    let fits = |free: f64, want: f64| -> f64 {
        if want <= 0.0 {
            f64::INFINITY
        } else {
            ((free + 1e-9) / want).floor().max(0.0)
        }
    };
    let mut k = fits(f.cpus, need.cpus).min(fits(f.memory, need.memory));
    if let Some((_, g)) = &need.gpus {
        k = k.min(fits(f.gpus, *g));
    }
    if k.is_finite() { k as u32 } else { u32::MAX }
}

/// Places up to `n` learners of `need` first fit, taking what they use; how many were
/// placed.
pub fn take(free: &mut [Free], need: &Need, n: u32) -> u32 {
    let mut left = n;
    for f in free.iter_mut() {
        if left == 0 {
            break;
        }
        let k = count(f, need).min(left);
        f.cpus -= need.cpus * k as f64;
        f.memory -= need.memory * k as f64;
        if let Some((_, g)) = &need.gpus {
            f.gpus -= g * k as f64;
        }
        left -= k;
    }
    n - left
}

/// How many learners of `need` each usable node can take now, by node name.
pub fn room(nodes: &[Node], pods: &[Pod], need: &Need) -> BTreeMap<String, u32> {
    let gpu = need
        .gpus
        .as_ref()
        .map_or("nvidia.com/gpu", |g| g.0.as_str());
    free(nodes, pods, gpu)
        .iter()
        .filter(|f| {
            need.selector
                .as_ref()
                .is_none_or(|(k, v)| f.labels.get(k) == Some(v))
        })
        .map(|f| (f.name.clone(), count(f, need)))
        .collect()
}

/// Whether `learners` learners of `need` fit the nodes now, after the learners of
/// gangs already let go whose pods are not on a node yet (`reserved`: what each needs,
/// how many); else what is short, in words.
pub fn gang_fits(
    nodes: &[Node],
    pods: &[Pod],
    need: &Need,
    learners: u32,
    reserved: &[(Need, u32)],
) -> Result<(), String> {
    let gpu = need
        .gpus
        .as_ref()
        .or_else(|| reserved.iter().find_map(|(n, _)| n.gpus.as_ref()))
        .map_or("nvidia.com/gpu", |g| g.0.as_str());
    let mut free = free(nodes, pods, gpu);
    for (n, k) in reserved {
        take(&mut free, n, *k);
    }
    let per_node: Vec<(String, u32)> = free
        .iter()
        .map(|f| (f.name.clone(), count(f, need)))
        .collect();
    let total: u64 = per_node.iter().map(|(_, k)| *k as u64).sum();
    if total >= learners as u64 {
        return Ok(());
    }
    let per_node: Vec<String> = per_node.iter().map(|(n, k)| format!("{n}: {k}")).collect();
    let waiting: u32 = reserved.iter().map(|(_, k)| k).sum();
    Err(format!(
        "{learners} learner(s) of {} vCPU, {:.0} MiB{} each; the nodes have room for {total} ({}){}",
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
        },
        if waiting > 0 {
            format!(", after {waiting} learner(s) of gangs already let go")
        } else {
            String::new()
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
        assert!(gang_fits(&nodes, &[], &need, 2, &[]).is_ok());
        // Another pod holds 1.5 vCPU of node a: one learner fits, not two.
        let busy = [pod("a", "1500m", "Running")];
        let err = gang_fits(&nodes, &busy, &need, 2, &[]).unwrap_err();
        assert!(err.contains("room for 1") && err.contains("a: 0"), "{err}");
        // Finished pods hold nothing.
        assert!(gang_fits(&nodes, &[pod("a", "1500m", "Succeeded")], &need, 2, &[]).is_ok());
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
        assert!(gang_fits(&cordoned, &[], &need, 1, &[]).is_err());
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
        assert!(gang_fits(&nodes, &[], &need, 3, &[]).is_err());
    }

    #[test]
    fn gangs_let_go_whose_pods_are_not_placed_yet_hold_their_room() {
        let nodes = [
            node("a", "2", "8Gi", json!({})),
            node("b", "2", "8Gi", json!({})),
        ];
        let small = Need {
            cpus: 1.0,
            memory: 0.0,
            gpus: None,
            selector: None,
        };
        let big = Need {
            cpus: 2.0,
            ..small.clone()
        };
        assert!(gang_fits(&nodes, &[], &big, 2, &[]).is_ok());
        // Two learners of 1 vCPU let go a moment ago fill node a: one big learner fits.
        let err = gang_fits(&nodes, &[], &big, 2, &[(small.clone(), 2)]).unwrap_err();
        assert!(
            err.contains("room for 1") && err.contains("already let go"),
            "{err}"
        );
        // A node tainted for GPUs takes no learner without GPUs.
        let gpu_only = [node(
            "g",
            "8",
            "8Gi",
            json!({"gpus": "1", "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}),
        )];
        assert!(gang_fits(&gpu_only, &[], &small, 1, &[]).is_err());
    }
}
