//! The committed server configuration and job manifests are valid as they are.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn example_server_configuration_loads() {
    let cfg =
        pharos_server::ServerConfig::load(Some(&repo().join("examples/server.yaml"))).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.queues.len(), 2);
    assert_eq!(cfg.queues[1].quota.get("cpu"), Some(&1.0));
    assert_eq!(cfg.capacity.cpus, 2.0);
    // The live graphs' server: a pool the diamond's five functions fit.
    let graphs =
        pharos_server::ServerConfig::load(Some(&repo().join("examples/server-graphs.yaml")))
            .unwrap();
    graphs.validate().unwrap();
    assert!(graphs.capacity.cpus >= 5.0);
    // Unknown settings are refused, naming the setting.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:1\ntick: 5\n").unwrap();
    let err = pharos_server::ServerConfig::load(Some(&bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tick"), "{err}");
}

#[test]
fn example_manifests_are_valid() {
    let dir = repo().join("examples/training");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // The training directory also holds simulation experiments.
        if text.contains("kind: training") {
            continue;
        }
        let m: pharos_core::Manifest =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        m.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 2, "manifests found: {n}");
}

#[test]
fn example_service_specs_are_valid() {
    let mut n = 0;
    for dir in ["examples/services", "examples/live"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // examples/live also holds the traces and the simulator's experiments
            // (loaded in pharos-experiment's tests).
            if !name.ends_with(".yaml") || name == "sim.yaml" || name == "learned.yaml" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let spec = pharos_server::services::ServiceSpec::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(format!("{}.yaml", spec.name), name);
            assert!(spec.command.iter().any(|a| a.contains("$PORT")));
            n += 1;
        }
    }
    assert_eq!(n, 4);
}

#[test]
fn the_live_graph_examples_are_valid() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples/graphs/live")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            pharos_engine::GraphSpec::is_graph(&text),
            "{}",
            path.display()
        );
        let g = pharos_engine::GraphSpec::parse(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(g.functions.iter().all(|f| f.command[0] == "pharos-replica"));
        names.push(g.name);
    }
    names.sort();
    assert_eq!(names, ["diamond", "fanout"]);
}

#[test]
fn the_ray_examples_are_valid() {
    let dir = repo().join("examples/ray");
    let cfg = pharos_server::ServerConfig::load(Some(&dir.join("server.yaml"))).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.backend, pharos_server::config::BackendKind::Ray);
    assert_eq!(cfg.ray.address, "http://127.0.0.1:8265");
    let text = std::fs::read_to_string(dir.join("model.yaml")).unwrap();
    let spec = pharos_server::services::ServiceSpec::parse(&text).unwrap();
    let app = spec.ray.expect("a Serve application");
    assert!(spec.command.is_empty());
    // The application's module is in its working directory.
    let module = app.import_path.split(':').next().unwrap();
    let wd = dir.join(app.working_dir.unwrap());
    assert!(wd.join(format!("{module}.py")).is_file());
    assert!(
        std::fs::read_to_string(wd.join(format!("{module}.py")))
            .unwrap()
            .contains(&format!("class {}", app.deployment))
    );
    let text = std::fs::read_to_string(dir.join("train.yaml")).unwrap();
    let m: pharos_core::Manifest = serde_saphyr::from_str(&text).unwrap();
    m.validate().unwrap();
    assert!(dir.join("train/train.py").is_file());
    assert!(m.framework.command.contains("train.py"));
}

#[test]
fn the_kubernetes_examples_are_valid() {
    let dir = repo().join("examples/kubernetes");
    let cfg = pharos_server::ServerConfig::load(Some(&dir.join("server.yaml"))).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.backend, pharos_server::config::BackendKind::Kubernetes);
    assert_eq!(cfg.kubernetes.namespace.as_deref(), Some("pharos"));
    let text = std::fs::read_to_string(dir.join("model.yaml")).unwrap();
    let spec = pharos_server::services::ServiceSpec::parse(&text).unwrap();
    let app = spec.kubernetes.expect("a container");
    assert_eq!(app.command, vec!["pharos-replica"]);
    assert!(spec.command.is_empty() && spec.ray.is_none());
    let text = std::fs::read_to_string(dir.join("train.yaml")).unwrap();
    let m: pharos_core::Manifest = serde_saphyr::from_str(&text).unwrap();
    m.validate().unwrap();
    // The framework's image is configured, and has the learner the command runs.
    let image = &cfg.kubernetes.images[&m.framework.name];
    assert!(image.starts_with("pharos:"));
    assert!(m.framework.command.starts_with("pharos-sgd"));
    let docker = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(docker.contains("pharos-sgd") && docker.contains("pharos-replica"));
}
