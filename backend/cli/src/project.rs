//! `stigmer apply` without `-f`: a project (Stigmer.yaml) whose program declares its resources
//! with a Stigmer SDK. The program runs with `STIGMER_OUT_DIR` set, writes one binary protobuf
//! message per resource there (`skill-0.pb`, `agent-0.pb`, …) and `dependencies.json`, and
//! those become the documents `apply -f` applies (ADR 0038).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use prost_reflect::DynamicMessage;
use serde::Deserialize;
use serde_json::{Value, json};
use stigmer_client::{API_VERSION, Client, SKILL_MD, slug_from_name};

use crate::manifest::Document;

/// The project file, looked for in the working folder unless `--project` says where.
pub const PROJECT_FILE: &str = "Stigmer.yaml";
/// The folder beside Stigmer.yaml the program writes to, as upstream's CLI names it.
pub const OUT_DIR: &str = ".stigmer";
const DEPENDENCIES: &str = "dependencies.json";

/// What the SDK writes, each file one message of the kind, in the order upstream applies
/// them when nothing else decides: what others use first.
const OUTPUTS: &[(&str, &str)] = &[
    ("skill", "Skill"),
    ("mcpserver", "McpServer"),
    ("agent", "Agent"),
    ("workflow", "Workflow"),
];

/// Stigmer.yaml.
#[derive(Debug, Deserialize)]
pub struct Project {
    pub name: String,
    pub runtime: String,
    #[serde(default)]
    pub main: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Keys nothing reads, to warn about.
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml_ng::Value>,
}

/// A Stigmer.yaml found and read, with the folder it is in.
pub struct Located {
    pub file: PathBuf,
    pub dir: PathBuf,
    pub project: Project,
}

/// Reads the project file at `path` (a Stigmer.yaml or the folder holding one), or in the
/// working folder.
pub fn locate(path: Option<&Path>) -> Result<Located> {
    let given = path.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let file = if given.is_dir() {
        given.join(PROJECT_FILE)
    } else {
        given
    };
    if !file.is_file() {
        bail!(
            "{} not found: run `stigmer apply` in a project folder (with Stigmer.yaml: name, \
             runtime, main), give one with --project PATH, or apply manifests with -f FILE",
            file.display()
        );
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let project: Project = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not a project file", file.display()))?;
    for key in project.other.keys() {
        eprintln!("warning: {}: unknown key {key} is ignored", file.display());
    }
    if project.name.trim().is_empty() {
        bail!("{}: name: must not be empty", file.display());
    }
    let dir = std::path::absolute(&file)
        .with_context(|| format!("cannot resolve {}", file.display()))?
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    Ok(Located { file, dir, project })
}

/// How a runtime runs its entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Go,
    Python,
    TypeScript,
}

impl Runtime {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_lowercase().as_str() {
            "go" | "golang" => Ok(Self::Go),
            "python" | "python3" => Ok(Self::Python),
            // Upstream's later CLI calls the same runtime `node`.
            "typescript" | "ts" | "node" | "nodejs" => Ok(Self::TypeScript),
            other => Err(format!(
                "unknown runtime {other:?}; use go, python or typescript"
            )),
        }
    }

    /// The entry point when Stigmer.yaml names none, as upstream's templates have it.
    fn default_main(self) -> &'static str {
        match self {
            Self::Go => "main.go",
            Self::Python => "main.py",
            Self::TypeScript => "index.ts",
        }
    }

    /// The commands to try, in order (a later one only when the earlier is not installed).
    fn commands(self, main: &str) -> Vec<Vec<String>> {
        let of = |parts: &[&str]| parts.iter().map(|p| (*p).to_string()).collect::<Vec<_>>();
        match self {
            Self::Go => vec![of(&["go", "run", main])],
            Self::Python => vec![of(&["python3", main]), of(&["python", main])],
            Self::TypeScript if main.ends_with(".js") || main.ends_with(".mjs") => {
                vec![of(&["node", main])]
            }
            Self::TypeScript => vec![of(&["npx", "--no-install", "tsx", main])],
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Self::Go => "install Go from https://go.dev/dl/ and put `go` on PATH",
            Self::Python => {
                "install Python 3 (https://www.python.org/downloads/) and put `python3` on PATH"
            }
            Self::TypeScript => {
                "install Node.js (https://nodejs.org/) and tsx (`npm install --save-dev tsx` in the project)"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::Python => "python",
            Self::TypeScript => "typescript",
        }
    }
}

/// One file the program wrote: the kind it holds and its bytes.
pub struct Written {
    pub file: PathBuf,
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

/// What one run of the program left in the out folder.
pub struct Synthesis {
    pub out_dir: PathBuf,
    pub written: Vec<Written>,
    /// `dependencies.json`: each upstream id (`agent:reviewer`) and the ids it needs.
    pub dependencies: BTreeMap<String, Vec<String>>,
}

/// Runs the project's program and reads what it wrote.
pub fn synthesize(located: &Located) -> Result<Synthesis> {
    let project = &located.project;
    let runtime = Runtime::parse(&project.runtime)
        .map_err(|err| anyhow::anyhow!("{}: runtime: {err}", located.file.display()))?;
    let main = project
        .main
        .clone()
        .filter(|main| !main.is_empty())
        .unwrap_or_else(|| runtime.default_main().to_string());
    if !located.dir.join(&main).exists() {
        bail!(
            "{}: main: {main} does not exist in {}",
            located.file.display(),
            located.dir.display()
        );
    }
    let out_dir = located.dir.join(OUT_DIR);
    clean(&out_dir)?;
    let version = project.version.as_deref().map(|v| format!(", version {v}"));
    let description = project.description.as_deref().map(|d| format!(": {d}"));
    eprintln!(
        "Running {} ({}{}){}",
        project.name,
        runtime.name(),
        version.unwrap_or_default(),
        description.unwrap_or_default()
    );
    run_program(runtime, &main, &located.dir, &out_dir)?;
    read_out_dir(&out_dir)
}

/// Removes what an earlier run wrote, so that a resource the program no longer declares is
/// not applied again. Only the files this protocol reads go: the folder may be the user's
/// ~/.stigmer when the project is the home folder.
fn clean(out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    for entry in
        std::fs::read_dir(out_dir).with_context(|| format!("cannot read {}", out_dir.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if (name == DEPENDENCIES || output_kind(name).is_some()) && path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The kind and index of an SDK output file name (`agent-3.pb` → Agent, 3).
fn output_kind(name: &str) -> Option<(&'static str, &str)> {
    let stem = name.strip_suffix(".pb")?;
    OUTPUTS.iter().find_map(|(prefix, kind)| {
        let index = stem.strip_prefix(prefix)?.strip_prefix('-')?;
        Some((*kind, index))
    })
}

fn run_program(runtime: Runtime, main: &str, dir: &Path, out_dir: &Path) -> Result<()> {
    let commands = runtime.commands(main);
    for command in &commands {
        let output = Command::new(&command[0])
            .args(&command[1..])
            .current_dir(dir)
            .env("STIGMER_OUT_DIR", out_dir)
            // The program's own output is for the user; stdout stays ours, for the results.
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::piped())
            .output();
        match output {
            Ok(output) => return check_exit(command, &output),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => bail!("cannot run `{}`: {err}", command.join(" ")),
        }
    }
    let tried: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    bail!(
        "the {} runtime needs `{}`, which is not on PATH: {}",
        runtime.name(),
        tried.join("` or `"),
        runtime.install_hint()
    )
}

/// How many lines of the program's stderr a failure repeats.
const STDERR_TAIL: usize = 20;

fn check_exit(command: &[String], output: &Output) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        eprint!("{stderr}");
        return Ok(());
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n");
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "a signal".to_string(),
    };
    let mut message = format!("`{}` failed with {status}", command.join(" "));
    if tail.trim().is_empty() {
        message.push_str(" and wrote nothing on stderr");
    } else {
        message.push_str(&format!("; the end of its stderr:\n{tail}"));
    }
    bail!(message)
}

/// Every SDK output file in the folder, in upstream's order (kind, then index), and
/// dependencies.json.
fn read_out_dir(out_dir: &Path) -> Result<Synthesis> {
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(out_dir).with_context(|| format!("cannot read {}", out_dir.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some((kind, index)) = output_kind(name) {
            let rank = OUTPUTS.iter().position(|(_, k)| *k == kind).unwrap_or(0);
            // skill-10.pb after skill-2.pb: numbers compare as numbers.
            let number = index.parse::<u64>().unwrap_or(u64::MAX);
            found.push(((rank, number, name.to_string()), kind, path));
        }
    }
    if found.is_empty() {
        bail!(
            "the program wrote no .pb files to STIGMER_OUT_DIR ({}): a Stigmer SDK program \
             writes one skill-N.pb, agent-N.pb or workflow-N.pb per resource it declares there \
             when it finishes (stigmer.Run in Go); check that main declares resources and calls \
             the SDK's run or synthesize step",
            out_dir.display()
        );
    }
    found.sort();
    let mut written = Vec::with_capacity(found.len());
    for (_, kind, file) in found {
        let bytes =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        written.push(Written { file, kind, bytes });
    }
    Ok(Synthesis {
        dependencies: read_dependencies(&out_dir.join(DEPENDENCIES))?,
        out_dir: out_dir.to_path_buf(),
        written,
    })
}

fn read_dependencies(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: must map each resource to the ones it needs, as {{\"agent:reviewer\": [\"skill:review\"]}}",
            path.display()
        )
    })
}

/// The documents `apply` takes, one per file. A Skill's SKILL.md text goes into a folder of
/// its own under `skills`, since skills are pushed from folders.
pub fn documents(client: &Client, synthesis: &Synthesis, skills: &Path) -> Result<Vec<Document>> {
    let mut documents = Vec::with_capacity(synthesis.written.len());
    for (number, written) in synthesis.written.iter().enumerate() {
        let kind = client.kind(written.kind)?;
        let message = DynamicMessage::decode(kind.message.clone(), written.bytes.as_slice())
            .with_context(|| {
                format!(
                    "{}: not a binary {} message",
                    written.file.display(),
                    kind.message.full_name()
                )
            })?;
        let mut value = serde_json::to_value(&message)
            .with_context(|| format!("{}: cannot read", written.file.display()))?;
        value["apiVersion"] = json!(API_VERSION);
        value["kind"] = json!(kind.name);
        if written.kind == "Skill" {
            value = skill_folder(&value, &skills.join(number.to_string()))?;
        }
        let source = written.file.display().to_string();
        documents.push(Document::standalone(source, 1, Ok(value)));
    }
    Ok(documents)
}

/// A Skill message as the manifest of a folder holding its SKILL.md.
fn skill_folder(skill: &Value, dir: &Path) -> Result<Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = skill["spec"]["skillMd"].as_str().unwrap_or_default();
    std::fs::write(dir.join(SKILL_MD), text)
        .with_context(|| format!("cannot write {}", dir.join(SKILL_MD).display()))?;
    let mut spec = json!({"path": dir.display().to_string()});
    if let Some(tag) = skill["spec"]["tag"].as_str().filter(|t| !t.is_empty()) {
        spec["tag"] = json!(tag);
    }
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "Skill",
        "metadata": skill["metadata"],
        "spec": spec,
    }))
}

/// A resource by (kind, slug), and one it must be applied after.
pub type Need = ((String, String), (String, String));

/// dependencies.json as (kind, slug) pairs: each resource and the ones it needs. Ids of
/// resources outside the project (`skill:external:x`) and of kinds the SDK does not write
/// are left out: no document of this run provides them.
pub fn needs(dependencies: &BTreeMap<String, Vec<String>>) -> Vec<Need> {
    let mut edges = Vec::new();
    for (dependent, needed) in dependencies {
        let Some(dependent) = parse_id(dependent) else {
            continue;
        };
        edges.extend(
            needed
                .iter()
                .filter_map(|id| parse_id(id))
                .map(|needed| (dependent.clone(), needed)),
        );
    }
    edges
}

/// `agent:code-reviewer` → (Agent, code-reviewer).
fn parse_id(id: &str) -> Option<(String, String)> {
    let (prefix, name) = id.split_once(':')?;
    if name.starts_with("external:") {
        return None;
    }
    let kind = match prefix {
        "skill" => "Skill",
        "mcp_server" | "mcpserver" => "McpServer",
        "agent" => "Agent",
        "workflow" => "Workflow",
        _ => return None,
    };
    let slug = slug_from_name(name);
    (!slug.is_empty()).then(|| (kind.to_string(), slug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_files_are_known_by_prefix_and_index() {
        assert_eq!(output_kind("agent-0.pb"), Some(("Agent", "0")));
        assert_eq!(output_kind("mcpserver-12.pb"), Some(("McpServer", "12")));
        assert_eq!(output_kind("agent.pb"), None);
        assert_eq!(output_kind("agents-0.pb"), None);
        assert_eq!(output_kind("agent-0.json"), None);
    }

    #[test]
    fn dependency_ids_become_kinds_and_slugs_and_external_ones_are_left_out() {
        let deps = BTreeMap::from([
            (
                "agent:Code Reviewer".to_string(),
                vec!["skill:review".to_string(), "skill:external:sec".to_string()],
            ),
            (
                "workflow:ship".to_string(),
                vec!["agent:code-reviewer".to_string()],
            ),
            ("project:x".to_string(), vec!["agent:y".to_string()]),
        ]);
        let pair = |k: &str, s: &str| (k.to_string(), s.to_string());
        assert_eq!(
            needs(&deps),
            vec![
                (pair("Agent", "code-reviewer"), pair("Skill", "review")),
                (pair("Workflow", "ship"), pair("Agent", "code-reviewer")),
            ]
        );
    }

    #[test]
    fn runtimes_run_their_entry_point_and_unknown_ones_are_named() {
        assert_eq!(
            Runtime::parse("go").map(|r| r.commands("main.go")),
            Ok(vec![vec!["go".to_string(), "run".into(), "main.go".into()]])
        );
        assert_eq!(Runtime::parse("Python"), Ok(Runtime::Python));
        assert_eq!(Runtime::parse("node"), Ok(Runtime::TypeScript));
        assert!(Runtime::parse("cobol").is_err_and(|e| e.contains("cobol")));
    }
}
