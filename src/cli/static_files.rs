//! `--static-path-route` / `--static-path-mount`: directories served by tower-http's
//! `ServeDir` in the router, before the Python fallback, so the app never sees those paths.
//!
//! `ServeDir` refuses `..` in the path but follows symlinks wherever they point; the files
//! it opens go through [`Confined`], which refuses any whose real path is outside the
//! directory.

use std::fs::Metadata;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend, File};

use crate::metrics::{self, NestedRoute};

/// One `--static-path-route` and the `--static-path-mount` given in the same position.
#[derive(Debug)]
pub(super) struct StaticDir {
    route: String,
    /// Canonical, so that the real path of every file served can be compared to it.
    root: Arc<Path>,
}

/// A `--static-path-route`: an absolute path below `/` (the app answers `/` itself),
/// without the pattern characters of axum routes. A trailing `/` is dropped.
pub(super) fn route(text: &str) -> Result<String, String> {
    let route = text.trim_end_matches('/');
    if !text.starts_with('/') {
        return Err(format!("'{text}' must start with '/'"));
    }
    if route.is_empty() {
        return Err("'/' would take every path from the app: give a prefix such as /static".into());
    }
    if route.contains(['{', '}', '*']) {
        return Err(format!("'{text}' cannot contain '{{', '}}' or '*'"));
    }
    Ok(route.to_owned())
}

/// The directories of the `--static-path-route` and `--static-path-mount` flags, paired
/// in order; each directory must exist.
pub(super) fn static_dirs(routes: &[String], mounts: &[PathBuf]) -> Result<Vec<StaticDir>, String> {
    if routes.len() != mounts.len() {
        return Err(format!(
            "{} --static-path-route but {} --static-path-mount: give them in pairs",
            routes.len(),
            mounts.len()
        ));
    }
    let mut dirs: Vec<StaticDir> = Vec::with_capacity(routes.len());
    for (route, mount) in routes.iter().zip(mounts) {
        if dirs.iter().any(|dir| dir.route == *route) {
            return Err(format!("--static-path-route {route} is given twice"));
        }
        let root = mount.canonicalize().map_err(|err| {
            format!(
                "cannot serve --static-path-mount {}: {err}",
                mount.display()
            )
        })?;
        if !root.is_dir() {
            return Err(format!(
                "--static-path-mount {} is not a directory",
                mount.display()
            ));
        }
        dirs.push(StaticDir {
            route: route.clone(),
            root: root.into(),
        });
    }
    Ok(dirs)
}

/// `router` with every directory nested at its route.
pub(super) fn mount(router: Router, dirs: &[StaticDir]) -> Router {
    dirs.iter().fold(router, |router, dir| {
        let files = ServeDir::with_backend(
            &dir.root,
            Confined {
                root: dir.root.clone(),
            },
        )
        .precompressed_br()
        .precompressed_gzip();
        let label = NestedRoute(format!("{}/{{*path}}", dir.route).into());
        let files = ServiceExt::<http::Request<axum::body::Body>>::map_response(
            files,
            move |mut response| {
                if metrics::enabled() {
                    response.extensions_mut().insert(label.clone());
                }
                response
            },
        );
        router.nest_service(&dir.route, files)
    })
}

/// The file system as `ServeDir` sees it, limited to what really lies under `root`: a path
/// whose real location (symlinks resolved) is elsewhere does not exist.
#[derive(Clone, Debug)]
struct Confined {
    root: Arc<Path>,
}

impl Confined {
    /// The real path of `path`, if it lies under the root. Blocking: call it on the
    /// blocking pool, with the file system call that follows in the same trip.
    fn inside(&self, path: &Path) -> io::Result<PathBuf> {
        let real = std::fs::canonicalize(path)?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "outside the served directory",
            ))
        }
    }

    /// Runs `then` on the real path of `path` in one trip to the blocking pool: a static
    /// file costs two trips before its first read (its metadata, then open), not five.
    fn blocking<T: Send + 'static>(
        &self,
        path: PathBuf,
        then: impl FnOnce(PathBuf) -> io::Result<T> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = io::Result<T>> + Send>> {
        let confined = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || then(confined.inside(&path)?))
                .await
                .map_err(io::Error::other)?
        })
    }
}

impl Backend for Confined {
    type File = ConfinedFile;
    type Metadata = Metadata;
    type OpenFuture = Pin<Box<dyn Future<Output = io::Result<ConfinedFile>> + Send>>;
    type MetadataFuture = Pin<Box<dyn Future<Output = io::Result<Metadata>> + Send>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        self.blocking(path, |real| {
            let file = std::fs::File::open(real)?;
            let metadata = file.metadata()?;
            Ok(ConfinedFile {
                file: tokio::fs::File::from_std(file),
                metadata,
            })
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        self.blocking(path, std::fs::metadata)
    }
}

/// A file opened by [`Confined`], with the metadata read when it was opened.
#[derive(Debug)]
struct ConfinedFile {
    file: tokio::fs::File,
    metadata: Metadata,
}

impl AsyncRead for ConfinedFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncSeek for ConfinedFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

impl File for ConfinedFile {
    type Metadata = Metadata;
    type MetadataFuture<'a> = std::future::Ready<io::Result<Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        std::future::ready(Ok(self.metadata.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_absolute_prefixes_without_patterns() {
        assert_eq!(route("/static/").as_deref(), Ok("/static"));
        assert_eq!(route("/a/b").as_deref(), Ok("/a/b"));
        for bad in ["static", "/", "//", "/{file}", "/a/*rest"] {
            assert!(route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_and_mounts_pair_in_order_and_must_match_in_number() {
        let here = PathBuf::from(".");
        let dirs = static_dirs(&["/a".into(), "/b".into()], &[here.clone(), here.clone()]).unwrap();
        assert_eq!(dirs[1].route, "/b");
        assert!(dirs[0].root.is_absolute());
        let err = static_dirs(&["/a".into()], &[]).unwrap_err();
        assert!(err.contains("1 --static-path-route but 0"), "{err}");
        let err = static_dirs(&["/a".into(), "/a".into()], &[here.clone(), here]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = static_dirs(&["/a".into()], &["/nonexistent/dir".into()]).unwrap_err();
        assert!(err.contains("/nonexistent/dir"), "{err}");
    }

    #[tokio::test]
    async fn a_symlink_out_of_the_directory_is_not_found_and_one_inside_is_followed() {
        let base = std::env::temp_dir().join(format!("confined-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(base.join("secret"), "secret").unwrap();
        std::fs::write(root.join("page"), "page").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("page"), root.join("alias")).unwrap();
        let confined = Confined {
            root: root.canonicalize().unwrap().into(),
        };
        let out = confined.metadata(root.join("out")).await.unwrap_err();
        assert_eq!(out.kind(), io::ErrorKind::NotFound);
        assert!(confined.open(root.join("out")).await.is_err());
        assert!(confined.open(root.join("alias")).await.is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
