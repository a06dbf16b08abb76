//! The batch loader: coverage of every index once per epoch, ordering, partial batches,
//! augmentation determinism, the cache, and skipping files that fail to decode.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the point

mod common;

use std::path::Path;

use convscope::data::{
    Augment, Channels, Dataset, FolderOptions, ImageFolder, Loader, LoaderOptions, Preprocess,
    Split, SyntheticFaces,
};

fn faces(n: usize) -> Dataset {
    Dataset::Synthetic(
        SyntheticFaces::new(5, n)
            .with_preprocess(Preprocess::plain(Channels::Rgb, [16, 16]))
            .unwrap(),
    )
}

fn opts(batch_size: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size,
        ..LoaderOptions::default()
    }
}

#[test]
fn every_index_once_per_epoch_with_a_partial_last_batch() {
    let loader = Loader::new(faces(103), opts(10)).unwrap();
    assert_eq!(loader.batches_per_epoch(), 11);
    let mut orders = Vec::new();
    for epoch in 0..2 {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        for batch in loader.epoch(epoch) {
            let b = batch.unwrap();
            assert_eq!(b.x.shape(), &[b.indices.len(), 3, 16, 16]);
            for (row, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.labels[row], i % 2);
            }
            sizes.push(b.indices.len());
            seen.extend(b.indices);
        }
        assert_eq!(sizes, [vec![10; 10], vec![3]].concat());
        orders.push(seen.clone());
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
    }
    assert_ne!(orders[0], orders[1], "epochs must be shuffled differently");
    assert_eq!(orders[0], loader.epoch_order(0));
}

#[test]
fn drop_last_and_oversized_batches() {
    let dropping = LoaderOptions {
        drop_last: true,
        ..opts(10)
    };
    let loader = Loader::new(faces(103), dropping.clone()).unwrap();
    let sizes: Vec<usize> = loader.epoch(0).map(|b| b.unwrap().indices.len()).collect();
    assert_eq!(sizes, vec![10; 10]);
    assert_eq!(loader.batches_per_epoch(), 10);
    // A batch larger than the set: one batch with everything, with or without drop_last.
    for drop_last in [false, true] {
        let big = Loader::new(
            faces(7),
            LoaderOptions {
                drop_last,
                ..opts(100)
            },
        )
        .unwrap();
        let sizes: Vec<usize> = big.epoch(0).map(|b| b.unwrap().indices.len()).collect();
        assert_eq!(sizes, vec![7]);
        assert_eq!(big.batches_per_epoch(), 1);
    }
    assert!(Loader::new(faces(7), opts(0)).is_err());
    assert!(Loader::new(faces(0), opts(4)).is_err());
}

#[test]
fn unshuffled_batches_match_single_loads() {
    let ds = faces(9);
    let loader = Loader::new(
        ds.clone(),
        LoaderOptions {
            shuffle: false,
            ..opts(4)
        },
    )
    .unwrap();
    let first = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(first.indices, vec![0, 1, 2, 3]);
    let per = 3 * 16 * 16;
    for (row, &i) in first.indices.iter().enumerate() {
        let (x, label) = ds.load(i).unwrap();
        assert_eq!(&first.x.data()[row * per..(row + 1) * per], x.data());
        assert_eq!(first.labels[row], label);
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<(Vec<usize>, Vec<f32>)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            (b.indices, b.x.into_data())
        })
        .collect()
}

#[test]
fn augmentation_is_seeded_and_cache_does_not_change_results() {
    let aug = LoaderOptions {
        augment: Augment {
            hflip: true,
            pad: 2,
            brightness: 0.1,
            contrast: 0.1,
        },
        ..opts(8)
    };
    let a = Loader::new(faces(20), aug.clone()).unwrap();
    let b = Loader::new(faces(20), aug.clone()).unwrap();
    assert_eq!(collect(&a, 3), collect(&b, 3));
    let plain = Loader::new(faces(20), opts(8)).unwrap();
    assert_ne!(
        collect(&a, 3),
        collect(&plain, 3),
        "augmentation changed nothing"
    );
    // Same epoch, same order, different pixels between epochs only through augmentation.
    let cached = Loader::new(
        faces(20),
        LoaderOptions {
            cache_bytes: 1 << 20,
            ..aug.clone()
        },
    )
    .unwrap();
    assert_eq!(collect(&cached, 3), collect(&a, 3));
    assert_eq!(cached.cached_bytes(), 20 * 3 * 16 * 16 * 4);
    assert_eq!(
        collect(&cached, 3),
        collect(&a, 3),
        "results from the cache differ"
    );
    // A budget of 5 samples keeps exactly 5.
    let small = Loader::new(
        faces(20),
        LoaderOptions {
            cache_bytes: 5 * 3 * 16 * 16 * 4,
            ..aug
        },
    )
    .unwrap();
    let _ = collect(&small, 0);
    assert_eq!(small.cached_bytes(), 5 * 3 * 16 * 16 * 4);
}

#[test]
fn dropping_an_epoch_early_stops_the_thread() {
    let loader = Loader::new(
        faces(200),
        LoaderOptions {
            prefetch: 1,
            ..opts(4)
        },
    )
    .unwrap();
    let mut it = loader.epoch(0);
    assert!(it.next().unwrap().is_ok());
    drop(it); // must return: the producer is blocked on a full channel
    assert_eq!(loader.epoch(1).count(), 50);
}

#[test]
fn files_failing_at_load_time_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for (class, k) in [("a", 0u8), ("a", 1), ("b", 2), ("b", 3)] {
        std::fs::create_dir_all(r.join(class)).unwrap();
        image::GrayImage::from_pixel(6, 6, image::Luma([k * 40]))
            .save(r.join(format!("{class}/{k}.png")))
            .unwrap();
    }
    std::fs::write(r.join("b/broken.png"), "garbage").unwrap();
    let opts_folder = FolderOptions {
        verify: false,
        test_fraction: 0.0,
        preprocess: Preprocess::plain(Channels::Rgb, [6, 6]),
        ..FolderOptions::default()
    };
    let folder = ImageFolder::open(r, &opts_folder).unwrap();
    let split = folder.split(Split::Train);
    assert_eq!(
        split.len(),
        5,
        "without verify the broken file is still listed"
    );
    let loader = Loader::new(Dataset::Folder(split), opts(2)).unwrap();
    let mut seen: usize = 0;
    for b in loader.epoch(0) {
        seen += b.unwrap().indices.len();
    }
    assert_eq!(seen, 4);
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        Path::new(&skipped[0].name).file_name().unwrap(),
        "broken.png"
    );
    assert!(
        skipped[0].reason.contains("decode"),
        "{}",
        skipped[0].reason
    );
}

#[test]
fn happy_test_folder_in_batches_of_32() {
    let root = common::shared_path("data/happy/test");
    let folder = ImageFolder::open(&root, &FolderOptions::default()).unwrap();
    let loader = Loader::new(Dataset::Folder(folder.all()), opts(32)).unwrap();
    let mut sizes = Vec::new();
    let mut smiles = 0;
    for b in loader.epoch(0) {
        let b = b.unwrap();
        assert_eq!(&b.x.shape()[1..], &[3, 64, 64]);
        sizes.push(b.labels.len());
        smiles += b.labels.iter().filter(|&&l| l == 1).count();
    }
    assert_eq!(sizes, vec![32, 32, 32, 32, 22]);
    assert_eq!(smiles, 84);
    assert!(loader.skipped().is_empty());
}

#[test]
fn idx_and_cifar_sets_batch_too() {
    use convscope::data::idx::write_idx;
    use convscope::data::{CifarSet, IdxSet};
    let dir = tempfile::tempdir().unwrap();
    let images = write_idx(&[5, 3, 3], &(0..45).collect::<Vec<u8>>());
    let labels = write_idx(&[5], &[0, 1, 2, 1, 0]);
    std::fs::write(dir.path().join("i"), images).unwrap();
    std::fs::write(dir.path().join("l"), labels).unwrap();
    let idx = IdxSet::open(dir.path().join("i"), dir.path().join("l")).unwrap();
    let loader = Loader::new(Dataset::Idx(idx), opts(2)).unwrap();
    assert_eq!(loader.dataset().classes(), vec!["0", "1", "2"]);
    let n: usize = loader.epoch(0).map(|b| b.unwrap().labels.len()).sum();
    assert_eq!(n, 5);
    let rec = |l: u8| [vec![l], vec![l * 20; 3072]].concat();
    let path = dir.path().join("data_batch_1.bin");
    std::fs::write(&path, [rec(1), rec(2), rec(3)].concat()).unwrap();
    let cifar = CifarSet::open(&[path]).unwrap();
    let loader = Loader::new(Dataset::Cifar(cifar), opts(4)).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.x.shape(), &[3, 3, 32, 32]);
    assert_eq!(loader.dataset().classes()[1], "automobile");
}
