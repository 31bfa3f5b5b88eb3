//! Tests of the layer store: keys, the contents digest, the cache lock and twins.

use super::*;

fn spec(key: char) -> LayerSpec {
    LayerSpec {
        name: "db".into(),
        key: key.to_string().repeat(64),
        packages: Vec::new(),
        vendor_packages: Vec::new(),
        vendor_skipped: Vec::new(),
        tool: None,
        parent: None,
        source_date_epoch: 0,
    }
}

/// A store holding a committed layer of `spec('a')` with two files.
fn store_with_layer() -> (tempfile::TempDir, LayerStore) {
    let cache = tempfile::tempdir().unwrap();
    let store = LayerStore::new(cache.path());
    let tree = store.tree(&spec('a'));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/one"), "one\n").unwrap();
    std::fs::write(tree.join("etc/two"), "two\n").unwrap();
    std::os::unix::fs::symlink("one", tree.join("etc/link")).unwrap();
    let record = serde_json::to_vec(&spec('a')).unwrap();
    std::fs::write(store.folder(&spec('a')).join("layer.json"), record).unwrap();
    record_contents(&tree).unwrap();
    (cache, store)
}

#[test]
fn a_cut_removed_added_or_relinked_file_makes_the_layer_damaged() {
    // (what is done to the tree, what the store then says)
    type Change = fn(&Path);
    let table: [(Change, bool); 6] = [
        (|_| {}, false),
        (
            |tree| std::fs::write(tree.join("etc/one"), "on").unwrap(),
            true,
        ),
        (
            |tree| std::fs::remove_file(tree.join("etc/two")).unwrap(),
            true,
        ),
        (
            |tree| std::fs::write(tree.join("etc/three"), "").unwrap(),
            true,
        ),
        (
            |tree| {
                std::fs::remove_file(tree.join("etc/link")).unwrap();
                std::os::unix::fs::symlink("two", tree.join("etc/link")).unwrap();
            },
            true,
        ),
        // The same length, other bytes: not looked at (the digest reads no content).
        (
            |tree| std::fs::write(tree.join("etc/one"), "eno\n").unwrap(),
            false,
        ),
    ];
    for (index, (change, damaged)) in table.into_iter().enumerate() {
        let (_cache, store) = store_with_layer();
        change(&store.tree(&spec('a')));
        let cached = store.check(&spec('a')).unwrap();
        assert_eq!(
            matches!(cached, Cached::Damaged(_)),
            damaged,
            "case {index}: {cached:?}"
        );
        if !damaged {
            assert_eq!(cached, Cached::Whole, "case {index}");
        }
    }
}

#[test]
fn a_second_holder_of_the_cache_lock_waits_for_the_first() {
    let cache = tempfile::tempdir().unwrap();
    let first = CacheLock::acquire(cache.path(), || panic!("nobody held it")).unwrap();
    let (waited_tx, waited_rx) = std::sync::mpsc::channel();
    let path = cache.path().to_path_buf();
    let second = std::thread::spawn(move || {
        let lock = CacheLock::acquire(&path, || waited_tx.send(()).unwrap()).unwrap();
        drop(lock);
    });
    waited_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the second waits");
    assert!(
        !second.is_finished(),
        "it still waits while the first holds it"
    );
    drop(first);
    second.join().unwrap();
}

#[test]
fn another_key_is_missing_and_a_layer_without_digest_gets_one() {
    let (_cache, store) = store_with_layer();
    assert_eq!(store.check(&spec('b')).unwrap(), Cached::Missing);
    let stamp = store.folder(&spec('a')).join(CONTENTS_STAMP);
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(store.check(&spec('a')).unwrap(), Cached::Whole);
    assert!(stamp.is_file());
    std::fs::remove_file(store.tree(&spec('a')).join("etc/two")).unwrap();
    assert!(matches!(
        store.check(&spec('a')).unwrap(),
        Cached::Damaged(_)
    ));
}

#[test]
fn a_whole_layer_of_another_name_and_the_same_key_is_a_twin() {
    let (_cache, store) = store_with_layer();
    let named = |name: &str, key: char| LayerSpec {
        name: name.into(),
        ..spec(key)
    };
    // (the layer asked for, the twin found)
    let found = |asked: &LayerSpec| store.twin(asked).unwrap().map(|twin| twin.name);
    assert_eq!(found(&named("api", 'a')), Some("db".to_string()));
    assert_eq!(
        found(&named("db", 'a')),
        None,
        "a layer is not its own twin"
    );
    assert_eq!(found(&named("api", 'b')), None, "another key");
    std::fs::remove_file(store.tree(&spec('a')).join("etc/two")).unwrap();
    assert_eq!(
        found(&named("api", 'a')),
        None,
        "a damaged layer is no twin"
    );
}
