//! The slow lane (`scripts/test.sh slow`): the full-size Fashion-MNIST from Debian's
//! dataset-fashion-mnist package (which the slow lane installs) loads with its class names.
//! Ignored, so the quick and full lanes leave it out.

use std::path::Path;

use aicp_train::{Dataset, DatasetKind, Fetch};

#[test]
#[ignore = "slow lane: scripts/test.sh slow"]
fn loads_the_full_fashion_mnist_from_debian() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let data = Dataset::load(DatasetKind::FashionMnist, dir, &Fetch::Offline).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert_eq!((data.rows, data.cols), (28, 28));
    assert_eq!(data.train.pixels.len(), 60_000 * 784);
    // Fashion-MNIST is balanced: 6,000 training images a class.
    let mut per_class = [0usize; 10];
    for &label in &data.train.labels {
        per_class[usize::from(label)] += 1;
    }
    assert_eq!(per_class, [6_000; 10]);
    assert_eq!(DatasetKind::FashionMnist.labels()[9], "Ankle boot");
}
