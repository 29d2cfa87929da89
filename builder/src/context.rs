//! The build context: a tar of a commit's tree read straight from the object database
//! (no checkout), filtered by the commit's `.dockerignore`, produced in chunks.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use git2::{ObjectType, Oid, Repository, Tree, TreeEntry};
use tokio::sync::mpsc;

use crate::dockerignore::{Decision, DockerIgnore};
use crate::error::BuilderError;

/// The size of the chunks the context is sent in.
pub const CHUNK_SIZE: usize = 64 * 1024;

const MODE_TREE: i32 = 0o040000;
const MODE_BLOB: i32 = 0o100644;
const MODE_BLOB_GROUP_WRITABLE: i32 = 0o100664;
const MODE_EXECUTABLE: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_COMMIT: i32 = 0o160000;

/// A commit ready to be sent as a build context.
pub struct Source {
    repo: Repository,
    tree: Oid,
    mtime: u64,
    short: String,
    ignore: DockerIgnore,
}

/// What was learnt from the commit before building it.
pub struct Prepared {
    /// The tree to send.
    pub source: Source,
    /// The commit's `Procfile`, if it has one.
    pub procfile: Option<String>,
    /// The commit id shortened to seven characters.
    pub short: String,
    /// Whether the commit has a `Dockerfile` at its root (else it is built with
    /// buildpacks, and `.dockerignore` does not apply).
    pub dockerfile: bool,
    /// The commit's `.buildpacks` file, if it has one.
    pub buildpacks_file: Option<String>,
}

/// Shortens a commit id for messages.
pub fn short(commit: &str) -> String {
    commit.chars().take(7).collect()
}

/// Opens the repository with its extra object directories, finds the commit, checks
/// whether it has a Dockerfile and reads its Procfile, `.dockerignore` and `.buildpacks`.
pub fn prepare(
    repo_path: &Path,
    object_dirs: &[PathBuf],
    commit: &str,
) -> Result<Prepared, BuilderError> {
    let repo = Repository::open_bare(repo_path).map_err(|source| BuilderError::OpenRepo {
        path: repo_path.to_path_buf(),
        source,
    })?;
    add_object_dirs(&repo, repo_path, object_dirs)?;

    let facts = inspect_commit(&repo, repo_path, commit)?;
    let CommitFacts {
        tree,
        mtime,
        short,
        procfile,
        ignore,
        dockerfile,
        buildpacks_file,
    } = facts;
    Ok(Prepared {
        source: Source {
            repo,
            tree,
            mtime,
            short: short.clone(),
            ignore,
        },
        procfile,
        short,
        dockerfile,
        buildpacks_file,
    })
}

/// What [`inspect_commit`] learnt.
struct CommitFacts {
    tree: Oid,
    mtime: u64,
    short: String,
    procfile: Option<String>,
    ignore: DockerIgnore,
    dockerfile: bool,
    buildpacks_file: Option<String>,
}

fn inspect_commit(
    repo: &Repository,
    repo_path: &Path,
    commit: &str,
) -> Result<CommitFacts, BuilderError> {
    let commit_error = |source| BuilderError::Commit {
        commit: short(commit),
        repo: repo_path.to_path_buf(),
        source,
    };
    let found = if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Oid::from_str(commit).and_then(|oid| repo.find_commit(oid))
    } else {
        repo.revparse_single(commit)
            .and_then(|object| object.peel_to_commit())
    }
    .map_err(commit_error)?;
    let short = short(&found.id().to_string());
    let tree = found.tree().map_err(|source| BuilderError::Tree {
        commit: short.clone(),
        path: "the root tree".to_string(),
        source,
    })?;
    let mtime = u64::try_from(found.time().seconds()).unwrap_or(0);

    let dockerfile = tree
        .get_name("Dockerfile")
        .is_some_and(|entry| entry.kind() == Some(ObjectType::Blob));

    let procfile = match read_root_file(repo, &tree, "Procfile", &short)? {
        None => None,
        Some(bytes) => {
            Some(
                String::from_utf8(bytes).map_err(|_| BuilderError::ProcfileNotUtf8 {
                    commit: short.clone(),
                })?,
            )
        }
    };

    let dockerignore = if dockerfile {
        read_root_file(repo, &tree, ".dockerignore", &short)?
    } else {
        None
    };
    let mut ignore = match dockerignore {
        None => DockerIgnore::default(),
        Some(bytes) => DockerIgnore::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| {
            BuilderError::DockerIgnore {
                commit: short.clone(),
                source,
            }
        })?,
    };
    if dockerfile {
        ignore.always_include(".dockerignore");
        ignore.always_include("Dockerfile");
    }

    let buildpacks_file = read_root_file(repo, &tree, ".buildpacks", &short)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());

    Ok(CommitFacts {
        tree: tree.id(),
        mtime,
        short,
        procfile,
        ignore,
        dockerfile,
        buildpacks_file,
    })
}

fn add_object_dirs(
    repo: &Repository,
    repo_path: &Path,
    object_dirs: &[PathBuf],
) -> Result<(), BuilderError> {
    if object_dirs.is_empty() {
        return Ok(());
    }
    let error = |dir: &Path, source| BuilderError::ObjectDir {
        dir: dir.to_path_buf(),
        repo: repo_path.to_path_buf(),
        source,
    };
    let odb = repo.odb().map_err(|source| BuilderError::OpenRepo {
        path: repo_path.to_path_buf(),
        source,
    })?;
    for dir in object_dirs {
        let path = dir
            .to_str()
            .ok_or_else(|| error(dir, git2::Error::from_str("the path is not valid UTF-8")))?;
        if !dir.is_dir() {
            return Err(error(dir, git2::Error::from_str("no such directory")));
        }
        odb.add_disk_alternate(path)
            .map_err(|source| error(dir, source))?;
    }
    Ok(())
}

/// Reads a regular file at the root of the tree; `None` if there is none.
fn read_root_file(
    repo: &Repository,
    tree: &Tree<'_>,
    name: &str,
    short: &str,
) -> Result<Option<Vec<u8>>, BuilderError> {
    let Some(entry) = tree.get_name(name) else {
        return Ok(None);
    };
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == MODE_LINK {
        return Ok(None);
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|source| BuilderError::Tree {
            commit: short.to_string(),
            path: name.to_string(),
            source,
        })?;
    Ok(Some(blob.content().to_vec()))
}

/// Writes the commit's tree, filtered by `.dockerignore`, into `tar` (without finishing
/// the archive).
pub fn write_tar<W: Write>(source: &Source, tar: &mut tar::Builder<W>) -> Result<(), BuilderError> {
    let tree = source
        .repo
        .find_tree(source.tree)
        .map_err(|err| source.tree_error("", err))?;
    let mut prefix = Vec::new();
    append_tree(source, &tree, &mut prefix, tar)
}

impl Source {
    fn tree_error(&self, path: &str, source: git2::Error) -> BuilderError {
        BuilderError::Tree {
            commit: self.short.clone(),
            path: if path.is_empty() {
                "the root tree".to_string()
            } else {
                path.to_string()
            },
            source,
        }
    }

    fn io_error(&self, source: io::Error) -> BuilderError {
        BuilderError::Context {
            commit: self.short.clone(),
            source,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header
    }
}

fn append_tree<W: Write>(
    source: &Source,
    tree: &Tree<'_>,
    prefix: &mut Vec<u8>,
    tar: &mut tar::Builder<W>,
) -> Result<(), BuilderError> {
    for entry in tree.iter() {
        let start = prefix.len();
        if start > 0 {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(entry.name_bytes());
        let result = append_entry(source, &entry, prefix, tar);
        prefix.truncate(start);
        result?;
    }
    Ok(())
}

fn append_entry<W: Write>(
    source: &Source,
    entry: &TreeEntry<'_>,
    path_bytes: &mut Vec<u8>,
    tar: &mut tar::Builder<W>,
) -> Result<(), BuilderError> {
    let mode = entry.filemode();
    if mode == MODE_COMMIT {
        // A submodule: its commit is not in this repository.
        return Ok(());
    }
    let is_dir = mode == MODE_TREE;
    let rel = String::from_utf8_lossy(path_bytes).into_owned();
    let decision = if source.ignore.is_empty() {
        Decision::Include
    } else {
        source.ignore.walk_decision(&rel, is_dir)
    };
    let path = Path::new(OsStr::from_bytes(path_bytes)).to_path_buf();
    match (is_dir, decision) {
        (_, Decision::Exclude | Decision::Prune) => Ok(()),
        (true, decision) => {
            if decision == Decision::Include {
                let mut header = source.header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut header, &path, io::empty())
                    .map_err(|err| source.io_error(err))?;
            }
            let tree = source
                .repo
                .find_tree(entry.id())
                .map_err(|err| source.tree_error(&rel, err))?;
            append_tree(source, &tree, path_bytes, tar)
        }
        (false, _) => {
            let blob = source
                .repo
                .find_blob(entry.id())
                .map_err(|err| source.tree_error(&rel, err))?;
            let content = blob.content();
            match mode {
                MODE_LINK => {
                    let mut header = source.header(tar::EntryType::Symlink, 0o777, 0);
                    let target = Path::new(OsStr::from_bytes(content));
                    tar.append_link(&mut header, &path, target)
                }
                MODE_BLOB | MODE_BLOB_GROUP_WRITABLE | MODE_EXECUTABLE => {
                    let file_mode = if mode == MODE_EXECUTABLE {
                        0o755
                    } else {
                        0o644
                    };
                    let mut header =
                        source.header(tar::EntryType::Regular, file_mode, content.len() as u64);
                    tar.append_data(&mut header, &path, content)
                }
                _ => Ok(()),
            }
            .map_err(|err| source.io_error(err))
        }
    }
}

/// Writes bytes into a channel in chunks of [`CHUNK_SIZE`].
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The receiving side went away: the build stopped reading.
    closed: bool,
    /// Writing failed; nothing more may be sent (not even the archive's end marker).
    poisoned: bool,
}

impl ChunkWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_SIZE),
            closed: false,
            poisoned: false,
        }
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_SIZE),
        ));
        if self.tx.blocking_send(Ok(chunk)).is_err() {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the build stopped reading the context",
            ));
        }
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.poisoned || self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the build context was abandoned",
            ));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_SIZE {
            self.send_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned || self.closed {
            return Ok(());
        }
        self.send_chunk()
    }
}

/// Writes the whole context into `tx`, chunk by chunk; meant for a blocking task. On a
/// failure the stream ends with an error item, so the request body is aborted rather
/// than ending like a complete archive.
pub fn stream_tar(
    source: &Source,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), BuilderError> {
    let mut writer = ChunkWriter::new(tx);
    let result = {
        let mut tar = tar::Builder::new(&mut writer);
        let result = write_tar(source, &mut tar)
            .and_then(|()| tar.finish().map_err(|err| source.io_error(err)));
        if result.is_err() {
            tar.get_mut().poisoned = true;
        }
        result
    };
    let result = result.and_then(|()| writer.flush().map_err(|err| source.io_error(err)));
    if writer.closed {
        return Err(BuilderError::ContextClosed);
    }
    if let Err(err) = &result {
        writer.poisoned = true;
        let _ = writer
            .tx
            .blocking_send(Err(io::Error::other(err.to_string())));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Makes a bare repository with one commit of `files`; returns (tempdir, bare, commit).
    fn repo(
        files: &[(&str, &str)],
        setup: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        for (path, content) in files {
            let path = work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&work, &["add", "-A"]);
        setup(&work);
        git(&work, &["commit", "-q", "-m", "test"]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
        let bare = dir.path().join("repo.git");
        (dir, bare, commit)
    }

    /// Streams the context and returns its chunks as they were sent.
    fn chunks(source: Source) -> (Vec<io::Result<Bytes>>, Result<(), BuilderError>) {
        let (tx, mut rx) = mpsc::channel(2);
        let producer = std::thread::spawn(move || stream_tar(&source, tx));
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            chunks.push(chunk);
        }
        (chunks, producer.join().unwrap())
    }

    #[derive(Debug, PartialEq)]
    enum Item {
        Dir(u32),
        File(u32, Vec<u8>),
        Link(String),
    }

    fn entries(data: &[u8]) -> BTreeMap<String, Item> {
        let mut archive = tar::Archive::new(data);
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mode = entry.header().mode().unwrap();
            let item = match entry.header().entry_type() {
                tar::EntryType::Directory => Item::Dir(mode),
                tar::EntryType::Symlink => Item::Link(
                    entry
                        .link_name()
                        .unwrap()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
                tar::EntryType::Regular => {
                    let mut content = Vec::new();
                    entry.read_to_end(&mut content).unwrap();
                    Item::File(mode, content)
                }
                other => panic!("unexpected entry type {other:?}"),
            };
            out.insert(path, item);
        }
        out
    }

    #[test]
    fn the_tar_holds_the_tree_with_modes_links_and_no_submodules() {
        let big = "x".repeat(200 * 1024);
        let long_name = format!("deep/{}/file.txt", "d".repeat(120));
        let (_dir, bare, commit) = repo(
            &[
                ("Dockerfile", "FROM empire/busybox\n"),
                ("Procfile", "web: httpd -f\n"),
                ("bin/run", "#!/bin/sh\n"),
                ("big.bin", &big),
                (&long_name, "long"),
            ],
            |work| {
                use std::os::unix::fs::PermissionsExt;
                let run = work.join("bin/run");
                std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::os::unix::fs::symlink("bin/run", work.join("run-link")).unwrap();
                git(work, &["add", "-A"]);
                let sub = "1111111111111111111111111111111111111111";
                git(
                    work,
                    &[
                        "update-index",
                        "--add",
                        "--cacheinfo",
                        &format!("160000,{sub},vendor/sub"),
                    ],
                );
            },
        );
        let prepared = prepare(&bare, &[], &commit).unwrap();
        assert_eq!(prepared.short, &commit[..7]);
        assert_eq!(prepared.procfile.as_deref(), Some("web: httpd -f\n"));
        let (chunks, result) = chunks(prepared.source);
        result.unwrap();
        let chunks: Vec<Bytes> = chunks.into_iter().map(|c| c.unwrap()).collect();
        assert!(chunks.len() >= 4, "sent in chunks, got {}", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_SIZE + 8 * 1024));
        let data: Vec<u8> = chunks.concat();
        let got = entries(&data);
        assert_eq!(
            got["Dockerfile"],
            Item::File(0o644, b"FROM empire/busybox\n".to_vec())
        );
        assert_eq!(got["bin"], Item::Dir(0o755));
        assert_eq!(got["bin/run"], Item::File(0o755, b"#!/bin/sh\n".to_vec()));
        assert_eq!(got["run-link"], Item::Link("bin/run".into()));
        assert_eq!(got["big.bin"], Item::File(0o644, big.into_bytes()));
        assert_eq!(got[long_name.as_str()], Item::File(0o644, b"long".to_vec()));
        assert!(got.contains_key("vendor"), "{:?}", got.keys());
        assert!(!got.contains_key("vendor/sub"), "submodules are skipped");
    }

    #[test]
    fn dockerignore_filters_the_tar() {
        let (_dir, bare, commit) = repo(
            &[
                ("Dockerfile", "FROM empire/busybox\n"),
                (
                    ".dockerignore",
                    "# ignore\nsecret.txt\nlogs/\ndocs\n!docs/keep.md\n**/*.tmp\nDockerfile\n.dockerignore\n",
                ),
                ("secret.txt", "s"),
                ("app.txt", "a"),
                ("logs/a.log", "l"),
                ("logs/sub/b.log", "l"),
                ("docs/a.md", "d"),
                ("docs/keep.md", "k"),
                ("src/x.tmp", "t"),
                ("src/main.rs", "m"),
            ],
            |_| {},
        );
        let prepared = prepare(&bare, &[], &commit).unwrap();
        let (chunks, result) = chunks(prepared.source);
        result.unwrap();
        let data: Vec<u8> = chunks
            .into_iter()
            .map(|c| c.unwrap())
            .collect::<Vec<_>>()
            .concat();
        let got: Vec<String> = entries(&data).into_keys().collect();
        assert_eq!(
            got,
            vec![
                ".dockerignore",
                "Dockerfile",
                "app.txt",
                "docs/keep.md",
                "src",
                "src/main.rs"
            ]
        );
    }

    #[test]
    fn a_missing_object_aborts_the_stream_with_an_error() {
        let (_dir, bare, commit) = repo(
            &[
                ("Dockerfile", "FROM empire/busybox\n"),
                ("gone.txt", "this blob will vanish"),
            ],
            |_| {},
        );
        let blob = git(&bare, &["rev-parse", &format!("{commit}:gone.txt")]);
        // A local clone links the loose objects of the work repository.
        let loose = bare.join("objects").join(&blob[..2]).join(&blob[2..]);
        assert!(
            loose.is_file(),
            "expected a loose object at {}",
            loose.display()
        );
        std::fs::remove_file(&loose).unwrap();

        let prepared = prepare(&bare, &[], &commit).unwrap();
        let (chunks, result) = chunks(prepared.source);
        let err = result.unwrap_err();
        assert!(
            matches!(&err, BuilderError::Tree { path, .. } if path == "gone.txt"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("reading gone.txt in commit {}: ", &commit[..7])),
            "{err}"
        );
        let last = chunks.last().expect("something was sent");
        assert!(
            last.is_err(),
            "the stream must end with an error, not an archive end"
        );
    }

    #[test]
    fn prepare_reports_user_errors() {
        let (_dir, bare, commit) = repo(
            &[
                ("README", "no dockerfile"),
                (".dockerignore", "[oops\n"),
                (".buildpacks", "python\n"),
            ],
            |_| {},
        );
        // Without a Dockerfile the commit is built with buildpacks: `.dockerignore`
        // does not apply (so its bad pattern is no error) and `.buildpacks` is read.
        let prepared = prepare(&bare, &[], &commit).ok().unwrap();
        assert!(!prepared.dockerfile);
        assert_eq!(prepared.buildpacks_file.as_deref(), Some("python\n"));
        assert!(prepared.source.ignore.is_empty());

        let missing = "0123456789abcdef0123456789abcdef01234567";
        let err = prepare(&bare, &[], missing).err().unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("reading commit 0123456 from {}: ", bare.display())),
            "{err}"
        );

        let (_dir, bare, commit) = repo(
            &[
                ("Dockerfile", "FROM empire/busybox\n"),
                (".dockerignore", "ok\n[oops\n"),
            ],
            |_| {},
        );
        let err = prepare(&bare, &[], &commit).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid .dockerignore in {}: line 2: syntax error in pattern \"[oops\"",
                &commit[..7]
            )
        );

        let err = prepare(Path::new("/nonexistent/repo.git"), &[], &commit)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("opening repository /nonexistent/repo.git: "),
            "{err}"
        );
    }
}
