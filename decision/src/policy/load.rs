//! Reading Cedar policy files into one policy set, and validating it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// A problem in a policy file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}: line {l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every policy of the configured files, with the names audit records use.
#[derive(Debug)]
pub struct PolicyBundle {
    /// The policies, ids unique across files.
    pub set: PolicySet,
    /// Reported name per policy: its `@id` annotation, else `file.cedar#n`.
    pub names: HashMap<PolicyId, Arc<str>>,
    origin: HashMap<PolicyId, usize>,
    files: Vec<(PathBuf, String)>,
}

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

/// The policies of one parsed file, in source order (the parser numbers
/// them `policy0`, `policy1`, …).
pub(super) fn in_source_order(set: &PolicySet) -> Vec<&cedar_policy::Policy> {
    let mut policies: Vec<_> = set.policies().collect();
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    policies
}

/// Reads and parses `files`; every problem of every file is reported.
pub fn load(files: &[PathBuf]) -> Result<PolicyBundle, Vec<PolicyError>> {
    let (sources, errors) = read_sources(files);
    if !errors.is_empty() {
        return Err(errors);
    }
    from_sources(&sources)
}

/// Reads `files` into (path, text) pairs; unreadable files are errors.
pub fn read_sources(files: &[PathBuf]) -> (Vec<(PathBuf, String)>, Vec<PolicyError>) {
    let mut errors = Vec::new();
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(t) => sources.push((path.clone(), t)),
            Err(e) => errors.push(PolicyError {
                file: path.clone(),
                line: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    (sources, errors)
}

/// Parses policy texts, each under the path its errors and unnamed policies
/// (`file.cedar#n`) are reported with; every problem is reported.
pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<PolicyBundle, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut bundle = PolicyBundle {
        set: PolicySet::new(),
        names: HashMap::new(),
        origin: HashMap::new(),
        files: Vec::new(),
    };
    let mut seen_names: HashMap<Arc<str>, PathBuf> = HashMap::new();
    for (path, text) in sources {
        let text = text.clone();
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = match PolicySet::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                for d in e.iter() {
                    let line = first_offset(d).map(|o| line_of(&text, o));
                    errors.push(PolicyError {
                        file: path.clone(),
                        line,
                        message: d.to_string(),
                    });
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            errors.push(PolicyError {
                file: path.clone(),
                line: None,
                message: "policy templates are not supported".into(),
            });
            continue;
        }
        let file_idx = bundle.files.len();
        for (n, p) in in_source_order(&parsed).into_iter().enumerate() {
            let id = PolicyId::new(format!("{stem}#{n}"));
            let name: Arc<str> = Arc::from(
                p.annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| id.to_string()),
            );
            let line = None;
            if let Some(other) = seen_names.get(&name) {
                errors.push(PolicyError {
                    file: path.clone(),
                    line,
                    message: format!("policy id `{name}` is also used in {}", other.display()),
                });
                continue;
            }
            seen_names.insert(Arc::clone(&name), path.clone());
            if let Err(e) = bundle.set.add(p.new_id(id.clone())) {
                errors.push(PolicyError {
                    file: path.clone(),
                    line,
                    message: e.to_string(),
                });
                continue;
            }
            bundle.names.insert(id.clone(), name);
            bundle.origin.insert(id, file_idx);
        }
        bundle.files.push((path.clone(), text));
    }
    if errors.is_empty() {
        Ok(bundle)
    } else {
        Err(errors)
    }
}

impl PolicyBundle {
    /// An empty bundle (no policy files configured).
    pub fn empty() -> Self {
        Self {
            set: PolicySet::new(),
            names: HashMap::new(),
            origin: HashMap::new(),
            files: Vec::new(),
        }
    }

    /// Whether any policy is loaded.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Validates the policies against a Cedar schema (JSON form).
    pub fn validate(&self, schema: serde_json::Value) -> Vec<PolicyError> {
        let no_file = Path::new("<schema>").to_path_buf();
        let schema = match Schema::from_json_value(schema) {
            Ok(s) => s,
            Err(e) => {
                return vec![PolicyError {
                    file: no_file,
                    line: None,
                    message: format!("generated schema: {e}"),
                }]
            }
        };
        let result = Validator::new(schema).validate(&self.set, ValidationMode::Strict);
        result
            .validation_errors()
            .map(|e| {
                let id = e.policy_id();
                let (file, text) = self
                    .origin
                    .get(id)
                    .and_then(|&i| self.files.get(i))
                    .map(|(f, t)| (f.clone(), t.as_str()))
                    .unwrap_or((no_file.clone(), ""));
                let line = first_offset(e).map(|o| line_of(text, o));
                let name = self
                    .names
                    .get(id)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| id.to_string());
                PolicyError {
                    file,
                    line,
                    message: format!("policy `{name}`: {e}"),
                }
            })
            .collect()
    }

    /// The policies `keep` keeps, under the same names and origins.
    fn subset(&self, keep: impl Fn(&cedar_policy::Policy) -> bool) -> Self {
        let mut out = Self {
            set: PolicySet::new(),
            names: HashMap::new(),
            origin: HashMap::new(),
            files: self.files.clone(),
        };
        for p in self.set.policies().filter(|p| keep(p)) {
            if out.set.add(p.clone()).is_ok() {
                if let Some(n) = self.names.get(p.id()) {
                    out.names.insert(p.id().clone(), Arc::clone(n));
                }
                if let Some(o) = self.origin.get(p.id()) {
                    out.origin.insert(p.id().clone(), *o);
                }
            }
        }
        out
    }

    /// Splits the bundle into the enforced set and, when any policy is
    /// annotated `@shadow`, the shadow set: `@shadow` policies are only in
    /// the shadow set, `@shadow("retire")` ones only in the enforced set,
    /// the rest in both.
    pub fn split_shadow(&self) -> (Self, Option<Self>) {
        let mark = |p: &cedar_policy::Policy| p.annotation("shadow").map(str::to_owned);
        if !self.set.policies().any(|p| mark(p).is_some()) {
            return (self.subset(|_| true), None);
        }
        let live = self.subset(|p| mark(p).is_none_or(|m| m == "retire"));
        let shadow = self.subset(|p| mark(p).is_none_or(|m| m != "retire"));
        (live, Some(shadow))
    }

    /// The files read, in order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }
}
