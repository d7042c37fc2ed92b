//! Where the planner finds the component a manifest names: [`UdfResolver`], with two
//! implementations, a folder of `.wasm` files ([`UdfDirectory`], `host run --udfs`) and one
//! tenant's part of a [`Registry`] ([`TenantRegistry`]).
//!
//! A component reference is `name` or `name@N` (the part before `#` in
//! `udf = "text@3#split_words"`): `name` is the newest version, `name@N` version `N` (a whole
//! number from 1, no sign, no leading zeros). A folder holds one version of each component, so
//! only a registry resolves `@N`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::component::UdfComponent;
use super::error::LoadError;
use super::guest_text;
use super::registry::{LookupError, MAX_NAME_LEN, Registry};
use super::runtime::UdfRuntime;

/// Components (or versions) listed in a "… there: …" hint; the rest are counted.
pub const MAX_LISTED_COMPONENTS: usize = 50;

/// How much of a reference a message shows.
const MAX_SHOWN_REF: usize = 200;

/// Finds a component by name for the planner; `Send + Sync` so a server can share one.
pub trait UdfResolver: Send + Sync {
    /// The component `name` refers to (`name` or `name@N`), loaded and checked.
    fn component(&self, name: &str) -> Result<Arc<UdfComponent>, ComponentError>;

    /// The component with the version it was resolved to (none for a folder), and whether the
    /// reference pinned that version (`@N`): what a [`SlotSet`](super::SlotSet) needs to know
    /// which slots follow a newer version.
    fn resolve(&self, name: &str) -> Result<Resolved, ComponentError> {
        let component = self.component(name)?;
        Ok(Resolved {
            name: component.name().to_string(),
            version: None,
            pinned: false,
            component,
        })
    }
}

/// A component as a resolver found it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The component's name, without any `@N`: the key slots are rebound by.
    pub name: String,
    /// Its version in a registry; none for a folder of files.
    pub version: Option<u64>,
    /// Whether the reference named the version (`name@N`): such a slot keeps it.
    pub pinned: bool,
    /// The component.
    pub component: Arc<UdfComponent>,
}

/// A parsed component reference: `name` or `name@N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef<'a> {
    /// The name.
    pub name: &'a str,
    /// The version after `@`, if any.
    pub version: Option<u64>,
}

impl<'a> ComponentRef<'a> {
    /// Split `name@N`; a reference without `@` has no version. The name itself is not checked
    /// here (each resolver says what it holds).
    pub fn parse(reference: &'a str) -> Result<Self, ComponentError> {
        let Some((name, version)) = reference.split_once('@') else {
            return Ok(Self {
                name: reference,
                version: None,
            });
        };
        let bad = |reason: &'static str| ComponentError::BadReference {
            reference: guest_text::sanitize(reference, MAX_SHOWN_REF),
            reason,
        };
        if name.is_empty() {
            return Err(bad("there is no name before `@`"));
        }
        let well_formed = !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_digit())
            && !version.starts_with('0');
        if !well_formed {
            return Err(bad(
                "the version after `@` must be a whole number from 1, without sign or leading zeros",
            ));
        }
        let version = version
            .parse::<u64>()
            .map_err(|_| bad("the version after `@` is too large"))?;
        Ok(Self {
            name,
            version: Some(version),
        })
    }
}

/// A component reference could not be resolved. [`ComponentError::hint`] says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// Nothing of that name where the resolver looks.
    #[error("component '{name}' not found: {where_}")]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where it was looked for: `no file DIR/NAME.wasm`, or the tenant.
        where_: String,
        /// What the resolver holds.
        place: Place,
        /// The names there, sorted, at most [`MAX_LISTED_COMPONENTS`].
        available: Vec<String>,
        /// How many more names there are than listed.
        more: usize,
    },
    /// The component was found but cannot be loaded.
    #[error("component '{name}' cannot be used: {source}")]
    Unusable {
        /// The name.
        name: String,
        /// Why.
        source: LoadError,
    },
    /// `name@…` is not a reference.
    #[error("component '{reference}' is not a valid reference: {reason}")]
    BadReference {
        /// What was written (cut and escaped).
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The component exists but not in that version.
    #[error("component '{name}' has no version {version}")]
    NoSuchVersion {
        /// The name.
        name: String,
        /// The version asked for.
        version: u64,
        /// The versions there, oldest first, at most [`MAX_LISTED_COMPONENTS`] (the newest).
        available: Vec<u64>,
    },
    /// `name@N` given to a resolver that keeps one version of each component.
    #[error("component '{name}@{version}': {dir} holds one version of each component")]
    VersionsUnsupported {
        /// The name.
        name: String,
        /// The version asked for.
        version: u64,
        /// The folder.
        dir: String,
    },
}

/// What a resolver looks in, for the hint of [`ComponentError::NotFound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A folder of `.wasm` files.
    Directory(PathBuf),
    /// A tenant's components in a registry.
    Registry {
        /// The tenant.
        tenant: String,
    },
}

impl ComponentError {
    /// What the job's owner can do about it.
    pub fn hint(&self) -> String {
        match self {
            ComponentError::NotFound {
                place,
                available,
                more,
                ..
            } => {
                if available.is_empty() {
                    match place {
                        Place::Directory(dir) => format!(
                            "{} holds no components; build them with `cargo xtask udfs`, or point --udfs at the right directory",
                            dir.display()
                        ),
                        Place::Registry { tenant } => format!(
                            "tenant '{tenant}' has no components yet; deploy one first"
                        ),
                    }
                } else if *more > 0 {
                    format!(
                        "components there: {}, … and {more} more",
                        available.join(", ")
                    )
                } else {
                    format!("components there: {}", available.join(", "))
                }
            }
            ComponentError::Unusable { source, .. } => source.hint().to_string(),
            ComponentError::BadReference { .. } => {
                "write udf = \"component#function\" for the newest version, or \"component@N#function\" for version N, e.g. \"text@3#split_words\"".into()
            }
            ComponentError::NoSuchVersion {
                name, available, ..
            } => {
                if available.is_empty() {
                    format!("'{name}' has no versions left; deploy it again")
                } else {
                    let listed: Vec<String> = available.iter().map(u64::to_string).collect();
                    format!(
                        "versions of '{name}' there: {}; or drop `@N` for the newest",
                        listed.join(", ")
                    )
                }
            }
            ComponentError::VersionsUnsupported { name, .. } => format!(
                "write udf = \"{name}#…\" to use {name}.wasm there; versions (`@N`) are kept by a UDF registry"
            ),
        }
    }
}

/// Where the components a job names are found: `DIR/<name>.wasm` (today's `--udfs`). Cheap
/// to build, one per plan: the folder is listed (for a "not found" hint) at most once per
/// `UdfDirectory`, however many components are missing.
pub struct UdfDirectory<'a> {
    /// The folder.
    pub dir: PathBuf,
    /// The runtime that loads them.
    pub runtime: &'a UdfRuntime,
    /// The sorted names in the folder (at most [`MAX_LISTED_COMPONENTS`]) and how many more.
    listing: OnceLock<(Vec<String>, usize)>,
}

impl<'a> UdfDirectory<'a> {
    /// Components in `dir`, loaded by `runtime`.
    pub fn new(dir: impl Into<PathBuf>, runtime: &'a UdfRuntime) -> Self {
        Self {
            dir: dir.into(),
            runtime,
            listing: OnceLock::new(),
        }
    }

    fn listing(&self) -> &(Vec<String>, usize) {
        self.listing.get_or_init(|| list_components(&self.dir))
    }
}

impl std::fmt::Debug for UdfDirectory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdfDirectory")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The `.wasm` files of `dir` by name, sorted, capped at [`MAX_LISTED_COMPONENTS`], with the
/// count of the rest. An unreadable folder lists nothing.
fn list_components(dir: &Path) -> (Vec<String>, usize) {
    let mut there: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".wasm")
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    there.sort();
    let more = there.len().saturating_sub(MAX_LISTED_COMPONENTS);
    there.truncate(MAX_LISTED_COMPONENTS);
    (there, more)
}

impl UdfResolver for UdfDirectory<'_> {
    fn component(&self, name: &str) -> Result<Arc<UdfComponent>, ComponentError> {
        let reference = ComponentRef::parse(name)?;
        if let Some(version) = reference.version {
            return Err(ComponentError::VersionsUnsupported {
                name: reference.name.to_string(),
                version,
                dir: self.dir.display().to_string(),
            });
        }
        let path = self.dir.join(format!("{name}.wasm"));
        if !path.is_file() {
            let (available, more) = self.listing().clone();
            return Err(ComponentError::NotFound {
                name: name.to_string(),
                where_: format!("no file {}", path.display()),
                place: Place::Directory(self.dir.clone()),
                available,
                more,
            });
        }
        self.runtime
            .load_file(&path)
            .map_err(|source| ComponentError::Unusable {
                name: name.to_string(),
                source,
            })
    }
}

/// One tenant's view of a [`Registry`]: `name` resolves to the newest version, `name@N` to
/// version `N`. Another tenant's components are never found.
#[derive(Debug, Clone, Copy)]
pub struct TenantRegistry<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The tenant whose components are resolved.
    pub tenant: &'a str,
}

impl UdfResolver for TenantRegistry<'_> {
    fn component(&self, name: &str) -> Result<Arc<UdfComponent>, ComponentError> {
        self.resolve(name).map(|r| r.component)
    }

    fn resolve(&self, name: &str) -> Result<Resolved, ComponentError> {
        let reference = ComponentRef::parse(name)?;
        let tenant = guest_text::sanitize(self.tenant, MAX_NAME_LEN + 16);
        let not_found = |available, more| ComponentError::NotFound {
            name: guest_text::sanitize(reference.name, MAX_NAME_LEN + 16),
            where_: format!("tenant '{tenant}' has no component of that name"),
            place: Place::Registry {
                tenant: tenant.clone(),
            },
            available,
            more,
        };
        match self
            .registry
            .get(self.tenant, reference.name, reference.version)
        {
            Ok(found) => Ok(Resolved {
                name: reference.name.to_string(),
                version: Some(found.info.version),
                pinned: reference.version.is_some(),
                component: found.component,
            }),
            Err(LookupError::UnknownComponent {
                available, more, ..
            }) => Err(not_found(available, more)),
            // A name the registry cannot hold is in it no more than a missing one.
            Err(LookupError::BadName(_)) => {
                let mut names = self.registry.names(self.tenant);
                let more = names.len().saturating_sub(MAX_LISTED_COMPONENTS);
                names.truncate(MAX_LISTED_COMPONENTS);
                Err(not_found(names, more))
            }
            Err(LookupError::UnknownVersion {
                name,
                version,
                available,
                ..
            }) => Err(ComponentError::NoSuchVersion {
                name,
                version,
                available,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::registry::testing;

    #[test]
    fn references_parse_name_and_version() {
        assert_eq!(
            ComponentRef::parse("text").unwrap(),
            ComponentRef {
                name: "text",
                version: None
            }
        );
        assert_eq!(
            ComponentRef::parse("text@3").unwrap(),
            ComponentRef {
                name: "text",
                version: Some(3)
            }
        );
        for bad in [
            "text@",
            "text@0",
            "text@03",
            "text@+3",
            "text@x",
            "@3",
            "text@3@4",
            "text@99999999999999999999999",
        ] {
            let e = ComponentRef::parse(bad).unwrap_err();
            assert!(
                matches!(e, ComponentError::BadReference { .. }),
                "{bad}: {e:?}"
            );
            assert!(e.hint().contains("text@3#split_words"), "{}", e.hint());
        }
    }

    #[test]
    fn a_folder_resolves_files_and_lists_what_is_there_once() {
        let runtime = testing::runtime();
        let dir = tempfile::tempdir().unwrap();
        let udfs = UdfDirectory::new(dir.path(), &runtime);

        // An empty folder says how to fill it.
        let e = udfs.component("text").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "component 'text' not found: no file {}",
                dir.path().join("text.wasm").display()
            )
        );
        assert_eq!(
            e.hint(),
            format!(
                "{} holds no components; build them with `cargo xtask udfs`, or point --udfs at the right directory",
                dir.path().display()
            )
        );

        // Listed once per resolver: files added later are not in this one's hints.
        std::fs::write(dir.path().join("b.wasm"), b"x").unwrap();
        assert!(
            udfs.component("nope")
                .unwrap_err()
                .hint()
                .contains("holds no components")
        );
        let udfs = UdfDirectory::new(dir.path(), &runtime);
        std::fs::write(dir.path().join("a.wasm"), b"x").unwrap();
        let e = udfs.component("nope").unwrap_err();
        assert_eq!(e.hint(), "components there: a, b");

        // A file that is not a component is unusable, with the load error's hint.
        let e = udfs.component("a").unwrap_err();
        assert!(
            matches!(
                &e,
                ComponentError::Unusable {
                    source: LoadError::NotWasm { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("component 'a' cannot be used: "),
            "{e}"
        );
        assert_eq!(
            e.hint(),
            "rebuild it against wit/udf.wit with `cargo xtask udfs`"
        );

        // The real component loads; a version needs a registry.
        std::fs::write(dir.path().join("text.wasm"), testing::udf_bytes("text")).unwrap();
        let text = udfs.component("text").unwrap();
        assert_eq!(text.name(), "text");
        let resolved = udfs.resolve("text").unwrap();
        assert_eq!((resolved.version, resolved.pinned), (None, false));
        let e = udfs.component("text@2").unwrap_err();
        assert!(
            matches!(e, ComponentError::VersionsUnsupported { version: 2, .. }),
            "{e:?}"
        );
        assert!(e.hint().contains("udf = \"text#…\""), "{}", e.hint());
    }

    #[test]
    fn a_long_listing_is_capped() {
        let runtime = testing::runtime();
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(MAX_LISTED_COMPONENTS + 7) {
            std::fs::write(dir.path().join(format!("c{i:03}.wasm")), b"").unwrap();
        }
        let udfs = UdfDirectory::new(dir.path(), &runtime);
        let e = udfs.component("missing").unwrap_err();
        let hint = e.hint();
        assert!(hint.starts_with("components there: c000, c001, "), "{hint}");
        assert!(hint.ends_with(", c049, … and 7 more"), "{hint}");
    }
}
