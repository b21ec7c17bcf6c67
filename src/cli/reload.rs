//! `--reload`: watching source files for the supervisor, which restarts the worker when one
//! changes. Which files count follows uvicorn's `--reload-include`/`--reload-exclude`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use glob::Pattern;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind};

/// Changes arriving this close together are one change: an editor saving a file writes,
/// renames and touches it in quick succession (uvicorn's `--reload-delay` default).
const SETTLE_TIME: Duration = Duration::from_millis(250);

/// uvicorn's defaults: Python sources count; hidden, compiled, swap and backup files don't.
const DEFAULT_INCLUDES: &[&str] = &["*.py"];
const DEFAULT_EXCLUDES: &[&str] = &[".*", ".py[cod]", ".sw.*", "~*"];
/// Directories whose contents never count: bytecode caches.
const IGNORED_DIRECTORIES: &[&str] = &["__pycache__"];

/// Which changed files restart the server.
#[derive(Debug)]
pub(super) struct ReloadFilter {
    includes: Vec<Pattern>,
    excludes: Vec<Pattern>,
}

impl ReloadFilter {
    /// uvicorn's rule: an included pattern is no longer excluded by default and vice versa.
    pub(super) fn new(includes: &[String], excludes: &[String]) -> Result<Self, Error> {
        let compile = |text: &str| {
            Pattern::new(text).map_err(|err| {
                Error::with_source(
                    ErrorKind::Config,
                    format!("bad reload pattern {text:?}"),
                    err,
                )
            })
        };
        let mut include_texts: Vec<&str> = DEFAULT_INCLUDES
            .iter()
            .copied()
            .filter(|default| !excludes.iter().any(|exclude| exclude == default))
            .collect();
        include_texts.extend(includes.iter().map(String::as_str));
        let mut exclude_texts: Vec<&str> = DEFAULT_EXCLUDES
            .iter()
            .copied()
            .filter(|default| !includes.iter().any(|include| include == default))
            .collect();
        exclude_texts.extend(excludes.iter().map(String::as_str));
        Ok(ReloadFilter {
            includes: include_texts
                .into_iter()
                .map(compile)
                .collect::<Result<_, _>>()?,
            excludes: exclude_texts
                .into_iter()
                .map(compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether a change to `path`, inside the watched directory `root`, counts. Patterns
    /// without a `/` match file names; the directories on the way must not be excluded
    /// either (so `.*` keeps `.git/` and `.venv/` out).
    pub(super) fn matches(&self, root: &Path, path: &Path) -> bool {
        let relative = path.strip_prefix(root).unwrap_or(path);
        let Some(name) = relative.file_name().and_then(|name| name.to_str()) else {
            return false;
        };
        let matches = |pattern: &Pattern| {
            if pattern.as_str().contains('/') {
                pattern.matches_path(relative)
            } else {
                pattern.matches(name)
            }
        };
        let hidden_by_directory = relative
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .filter_map(|component| component.as_os_str().to_str())
            .any(|directory| {
                IGNORED_DIRECTORIES.contains(&directory)
                    || self
                        .excludes
                        .iter()
                        .filter(|pattern| !pattern.as_str().contains('/'))
                        .any(|pattern| pattern.matches(directory))
            });
        !hidden_by_directory
            && self.includes.iter().any(matches)
            && !self.excludes.iter().any(matches)
    }
}

/// Watches directories recursively and reports changed files that pass the filter.
pub(super) struct FileWatcher {
    /// Kept alive for as long as changes should be reported.
    _watcher: RecommendedWatcher,
    changes: mpsc::UnboundedReceiver<PathBuf>,
}

impl FileWatcher {
    pub(super) fn new(directories: &[PathBuf], filter: ReloadFilter) -> Result<Self, Error> {
        let roots: Vec<PathBuf> = directories
            .iter()
            .map(|directory| {
                directory.canonicalize().map_err(|err| {
                    Error::new(
                        ErrorKind::System,
                        format!("cannot watch {}: {err}", directory.display()),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let (sender, changes) = mpsc::unbounded_channel();
        let watched_roots = roots.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if !matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                ) {
                    return;
                }
                for path in event.paths {
                    let counts = watched_roots
                        .iter()
                        .filter(|root| path.starts_with(root))
                        .any(|root| filter.matches(root, &path));
                    if counts {
                        let _ = sender.send(path);
                    }
                }
            })
            .map_err(|err| Error::with_source(ErrorKind::System, "cannot watch files", err))?;
        for root in &roots {
            watcher
                .watch(root, RecursiveMode::Recursive)
                .map_err(|err| {
                    Error::new(
                        ErrorKind::System,
                        format!("cannot watch {}: {err}", root.display()),
                    )
                })?;
            tracing::info!("watching {} for changes", root.display());
        }
        Ok(FileWatcher {
            _watcher: watcher,
            changes,
        })
    }

    /// The first file of the next burst of changes, once the burst has settled.
    pub(super) async fn changed(&mut self) -> Option<PathBuf> {
        let first = self.changes.recv().await?;
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE_TIME, self.changes.recv()).await {}
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(filter: &ReloadFilter, path: &str) -> bool {
        filter.matches(Path::new("/src"), &Path::new("/src").join(path))
    }

    #[test]
    fn python_sources_count_and_hidden_compiled_and_cached_files_do_not() {
        let filter = ReloadFilter::new(&[], &[]).unwrap();
        assert!(counts(&filter, "main.py"));
        assert!(counts(&filter, "pkg/models.py"));
        assert!(!counts(&filter, "README.md"));
        assert!(!counts(&filter, ".main.py"));
        assert!(!counts(&filter, "pkg/__pycache__/models.py"));
        assert!(!counts(&filter, ".venv/lib/site.py"));
        assert!(!counts(&filter, ".git/hooks/pre-commit.py"));
    }

    #[test]
    fn includes_and_excludes_override_each_others_defaults() {
        let filter = ReloadFilter::new(&["*.html".into()], &["test_*.py".into()]).unwrap();
        assert!(counts(&filter, "templates/index.html"));
        assert!(counts(&filter, "main.py"));
        assert!(!counts(&filter, "test_main.py"));

        // Excluding *.py itself drops the default include; including .* drops the exclude.
        let filter = ReloadFilter::new(&[".*".into()], &["*.py".into()]).unwrap();
        assert!(!counts(&filter, "main.py"));
        assert!(counts(&filter, ".env"));
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_it() {
        let err = ReloadFilter::new(&["[".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("\"[\""), "{err}");
    }

    #[tokio::test]
    async fn a_burst_of_changes_to_a_watched_file_is_reported_once() {
        let root = std::env::temp_dir().join(format!("ras-reload-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let mut watcher = FileWatcher::new(
            std::slice::from_ref(&root),
            ReloadFilter::new(&[], &[]).unwrap(),
        )
        .unwrap();
        std::fs::write(root.join("notes.txt"), "ignored").unwrap();
        for version in 0..3 {
            std::fs::write(root.join("app.py"), format!("VERSION = {version}")).unwrap();
        }
        let changed = tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.file_name().unwrap(), "app.py");
        let again = tokio::time::timeout(Duration::from_millis(500), watcher.changed()).await;
        assert!(again.is_err(), "one burst, one change: {again:?}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
