//! `stigmer apply`: every document in dependency order, skills pushed from their folders, and
//! a failure caused by another document's failure says which.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;
use stigmer_client::{BackendType, Client, ClientConfig, ClientError, Reference, SKILL_MD};

use super::{Ctx, finish, server_message};
use crate::manifest::{self, Document, Problem};
use crate::output::reference;
use crate::project;
use crate::skill::{self, SkillSource};

#[derive(Args)]
pub struct ApplyArgs {
    /// A manifest file, a directory of *.yaml/*.yml/*.json files, a skill folder (with
    /// SKILL.md), or - for stdin. Repeatable. Without it, the project in the working folder
    /// (Stigmer.yaml) is run and what it declares is applied.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    /// The project to run instead of the one in the working folder: its Stigmer.yaml or the
    /// folder holding it. (Upstream's `--config`; here `--config` is the CLI's own file.)
    #[arg(long, value_name = "PATH", conflicts_with = "files")]
    project: Option<PathBuf>,
    /// The organization to apply in, over the configured one (cloud backend; the local
    /// backend works in `local`).
    #[arg(long, value_name = "ORG")]
    org: Option<String>,
    /// Parse and check every document without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Apply every document or none, in one transaction (ResourceService/applyBatch): for a
    /// set that only makes sense whole. Skills are pushed on their own, not in the batch.
    #[arg(long)]
    atomic: bool,
}

/// Every document of every `-f` argument, in order; a folder with SKILL.md is one Skill.
pub fn read_documents(args: &[PathBuf]) -> Result<Vec<Document>> {
    let mut documents = Vec::new();
    for arg in args {
        if arg.is_dir() && arg.join(SKILL_MD).is_file() {
            documents.push(skill::folder_document(arg));
        } else {
            documents.extend(manifest::read_all(std::slice::from_ref(arg))?);
        }
    }
    Ok(documents)
}

pub async fn run(ctx: &Ctx, args: ApplyArgs) -> Result<ExitCode> {
    if args.files.is_empty() {
        return run_project(ctx, args).await;
    }
    let documents = read_documents(&args.files)?;
    if documents.is_empty() {
        bail!("no manifests found in the files given");
    }
    let client = connect(ctx, &args).await?;
    apply_documents(client, &documents, &[], &args).await
}

/// `apply` without `-f`: runs the project's program, then applies what it wrote like
/// manifests, with dependencies.json's order on top of the references found.
async fn run_project(ctx: &Ctx, args: ApplyArgs) -> Result<ExitCode> {
    let located = project::locate(args.project.as_deref())?;
    let synthesis = project::synthesize(&located)?;
    let client = connect(ctx, &args).await?;
    // Skills are pushed from folders; theirs live only as long as this command.
    let skills = match tempfile::tempdir() {
        Ok(skills) => skills,
        Err(err) => return finish(client, Err(err.into())).await,
    };
    let documents = match project::documents(&client, &synthesis, skills.path()) {
        Ok(documents) => documents,
        Err(err) => return finish(client, Err(err)).await,
    };
    eprintln!(
        "Read {} resources from {}",
        documents.len(),
        synthesis.out_dir.display()
    );
    let needs = project::needs(&synthesis.dependencies);
    apply_documents(client, &documents, &needs, &args).await
}

/// The configuration with `--org` in it, and a client: one that starts nothing for a dry
/// run, which checks shapes without a server.
async fn connect(ctx: &Ctx, args: &ApplyArgs) -> Result<Client> {
    let mut config = ctx.config()?;
    if let Some(org) = &args.org {
        choose_org(&mut config, org)?;
    }
    match args.dry_run {
        true => ctx.connect(&config).await,
        false => ctx.client_from(config).await,
    }
}

/// `--org`: the org of this command's calls. The local backend has one, `local` (seed 003).
fn choose_org(config: &mut ClientConfig, org: &str) -> Result<()> {
    if !stigmer_client::is_valid_slug(org) {
        bail!("--org {org:?} is not an org slug: 1-63 lowercase letters, digits or '-'");
    }
    match config.backend.kind {
        BackendType::Cloud => {
            config.backend.cloud.get_or_insert_default().org_id = org.to_string();
            Ok(())
        }
        BackendType::Local if org == "local" => Ok(()),
        BackendType::Local => bail!(
            "--org {org}: the local backend works in the organization `local`; --org chooses \
             the organization of a cloud backend (`stigmer login`)"
        ),
    }
}

/// Applies `documents` in dependency order (`needs`: (kind, slug) pairs, each with one it
/// must follow), then closes the client.
async fn apply_documents(
    client: Client,
    documents: &[Document],
    needs: &[project::Need],
    args: &ApplyArgs,
) -> Result<ExitCode> {
    if !args.dry_run && !client.transport().is_in_process() && !client.is_serving().await {
        // One line with the endpoint and the hint, not the same connect error per document.
        let endpoint = client.endpoint().to_string();
        return finish(
            client,
            Err(ClientError::Connect {
                endpoint,
                reason: "no answer to a health check".into(),
            }
            .into()),
        )
        .await;
    }
    let items: Vec<Item> = documents
        .iter()
        .map(|document| Item::prepare(&client, document).declaring(needs))
        .collect();
    if args.atomic && !args.dry_run {
        let code = apply_atomically(&client, &items).await;
        return finish(client, code).await;
    }
    let mut failures: Vec<Option<String>> = vec![None; items.len()];
    for index in dependency_order(&items) {
        let item = &items[index];
        match item.apply(&client, args.dry_run).await {
            Ok(line) => println!("{line}"),
            Err(failure) => {
                item.document.report(&failure.problems);
                for note in explain(&items, &failures, item, &failure) {
                    eprintln!("  {note}");
                }
                failures[index] = Some(failure.message);
            }
        }
    }
    let failed = failures.iter().flatten().count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} documents failed{}",
            documents.len(),
            if args.dry_run { " the check" } else { "" }
        );
        return finish(client, Ok(ExitCode::FAILURE)).await;
    }
    finish(client, Ok(ExitCode::SUCCESS)).await
}

/// One document, read and understood as far as it can be before anything is sent.
struct Item<'a> {
    document: &'a Document,
    /// What applying it does, or every reason it cannot be applied.
    plan: Result<Plan, Vec<Problem>>,
    /// The kind and slug it creates, for documents that reference it.
    provides: Option<(String, String)>,
    /// Its metadata.id (exports carry one), for documents that name it by id.
    id: Option<String>,
    references: Vec<Reference>,
    /// Every string under its spec, where ids of parents are.
    spec_strings: Vec<String>,
    /// The (kind, slug) of each resource it is declared to need (a project's
    /// dependencies.json), beyond its references.
    declared: Vec<(String, String)>,
}

enum Plan {
    Manifest(Value),
    Skill(SkillSource),
}

impl<'a> Item<'a> {
    fn prepare(client: &Client, document: &'a Document) -> Self {
        let plan = match &document.value {
            Err(err) => Err(vec![Problem::from(err.clone())]),
            // A skill folder's manifest has spec.path, which no Skill field holds.
            Ok(value) => match skill::source_of(document) {
                Some(source) => manifest::check_shape(value)
                    .and(source)
                    .map(Plan::Skill)
                    .map_err(|err| vec![Problem::from(err)]),
                None => {
                    manifest::check(client, document, value).map(|()| Plan::Manifest(value.clone()))
                }
            },
        };
        let value = document.value.as_ref().ok();
        let kind = value
            .and_then(|v| v["kind"].as_str())
            .and_then(|kind| client.kind(kind).ok())
            .map(|kind| kind.name.clone());
        let slug = match &plan {
            Ok(Plan::Skill(source)) => source.slug(),
            _ => value.map(manifest::manifest_slug).unwrap_or_default(),
        };
        let references = match &plan {
            Ok(Plan::Manifest(value)) => client.references(value).unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut spec_strings = Vec::new();
        if let Some(value) = value {
            strings(&value["spec"], &mut spec_strings);
        }
        Self {
            document,
            plan,
            provides: kind.filter(|_| !slug.is_empty()).map(|kind| (kind, slug)),
            id: value
                .and_then(|v| v["metadata"]["id"].as_str())
                .filter(|id| !id.is_empty())
                .map(str::to_string),
            references,
            spec_strings,
            declared: Vec::new(),
        }
    }

    /// With what `needs` says this item's resource must follow.
    fn declaring(mut self, needs: &[project::Need]) -> Self {
        if let Some(provides) = &self.provides {
            self.declared = needs
                .iter()
                .filter(|(dependent, _)| dependent == provides)
                .map(|(_, needed)| needed.clone())
                .collect();
        }
        self
    }

    /// Whether `other` must be applied before this one.
    fn depends_on(&self, other: &Item) -> bool {
        let by_name = other.provides.as_ref().is_some_and(|(kind, slug)| {
            self.references
                .iter()
                .any(|r| r.kind == *kind && r.slug == *slug)
        });
        let by_id = other
            .id
            .as_ref()
            .is_some_and(|id| self.spec_strings.contains(id));
        let declared = other
            .provides
            .as_ref()
            .is_some_and(|provided| self.declared.contains(provided));
        by_name || by_id || declared
    }

    async fn apply(&self, client: &Client, dry_run: bool) -> Result<String, Failure> {
        match self
            .plan
            .as_ref()
            .map_err(|problems| Failure::of_problems(problems.clone()))?
        {
            Plan::Skill(source) => skill::apply(client, source, dry_run)
                .await
                .map_err(Failure::from_anyhow),
            Plan::Manifest(value) => apply_manifest(client, value, dry_run).await,
        }
    }
}

fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        Value::Object(fields) => fields.values().for_each(|item| strings(item, out)),
        _ => {}
    }
}

/// Document indexes in the order to apply them: each after the documents it references,
/// otherwise in the order given. Documents in a reference cycle keep the order given.
fn dependency_order(items: &[Item]) -> Vec<usize> {
    let needs: Vec<Vec<usize>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            (0..items.len())
                .filter(|&j| j != i && item.depends_on(&items[j]))
                .collect()
        })
        .collect();
    let mut placed = vec![false; items.len()];
    let mut order = Vec::with_capacity(items.len());
    while order.len() < items.len() {
        let ready = (0..items.len()).find(|&i| !placed[i] && needs[i].iter().all(|&j| placed[j]));
        let Some(next) = ready.or_else(|| (0..items.len()).find(|&i| !placed[i])) else {
            break;
        };
        placed[next] = true;
        order.push(next);
    }
    order
}

/// Why a document failed: each problem with the field it concerns, and all of them in one
/// line for the documents that depended on it.
struct Failure {
    message: String,
    problems: Vec<Problem>,
}

impl Failure {
    fn plain(message: String) -> Self {
        Self {
            problems: vec![Problem::from(message.clone())],
            message,
        }
    }

    fn of_problems(problems: Vec<Problem>) -> Self {
        let message = problems
            .iter()
            .map(Problem::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Self { message, problems }
    }

    fn from_client(err: &ClientError) -> Self {
        let message = server_message(err);
        Self {
            problems: manifest::server_problems(err, message.clone()),
            message,
        }
    }

    fn from_anyhow(err: anyhow::Error) -> Self {
        match err.downcast_ref::<ClientError>() {
            Some(client) => Self::from_client(client),
            None => Self::plain(format!("{err:#}")),
        }
    }

    /// Whether the server found fault with the field at `path` (or inside it). Field paths
    /// are compared without case or underscores, so `spec.skill_refs[0]` is
    /// `spec.skillRefs[0]`.
    fn concerns(&self, path: &str) -> bool {
        let normal = |text: &str| text.replace('_', "").to_lowercase();
        let path = normal(path);
        let fields: Vec<&str> = self
            .problems
            .iter()
            .map(|problem| problem.path.as_str())
            .filter(|field| !field.is_empty())
            .collect();
        if fields.is_empty() {
            return normal(&self.message).contains(&path);
        }
        fields.into_iter().map(normal).any(|field| {
            field == path
                || field.starts_with(&format!("{path}."))
                || field.starts_with(&format!("{path}["))
        })
    }
}

/// For each reference the server refused: the document of this run that provides it and why
/// that one failed, or that none does.
fn explain(
    items: &[Item],
    failures: &[Option<String>],
    item: &Item,
    failure: &Failure,
) -> Vec<String> {
    let mut notes = Vec::new();
    for Reference { path, kind, slug } in &item.references {
        if !failure.concerns(path) {
            continue;
        }
        let named = format!("{path} names {} {slug:?}", kind.to_lowercase());
        let wanted = Some((kind.clone(), slug.clone()));
        match items.iter().position(|other| other.provides == wanted) {
            None => notes.push(format!("{named}, which no document given provides")),
            Some(provider) => {
                if let Some(why) = &failures[provider] {
                    notes.push(format!(
                        "{named}, provided by {}, which failed: {why}",
                        items[provider].document.location()
                    ));
                }
            }
        }
    }
    notes
}

/// `apply --atomic`: every document in one applyBatch, in dependency order, or none. Each
/// mistake is reported against its own document.
async fn apply_atomically(client: &Client, items: &[Item<'_>]) -> Result<ExitCode> {
    let mut unfit = 0;
    for item in items {
        match &item.plan {
            Err(problems) => {
                item.document.report(problems);
                unfit += 1;
            }
            Ok(Plan::Skill(_)) => {
                item.document.report(&[Problem::from(
                    "a skill is pushed, not applied in a batch: push it first (stigmer skill push), then apply the rest with --atomic".to_string(),
                )]);
                unfit += 1;
            }
            Ok(Plan::Manifest(_)) => {}
        }
    }
    if unfit > 0 {
        eprintln!(
            "error: {unfit} of {} documents cannot be applied; nothing was applied",
            items.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    let order = dependency_order(items);
    let manifests: Vec<Value> = order
        .iter()
        .filter_map(|&index| match &items[index].plan {
            Ok(Plan::Manifest(value)) => Some(value.clone()),
            _ => None,
        })
        .collect();
    match client.apply_batch(&manifests).await {
        Ok(applied) => {
            for (value, applied) in manifests.iter().zip(applied) {
                let kind = value["kind"].as_str().unwrap_or_default();
                println!(
                    "{} {}",
                    reference(client, kind, &applied.resource, "<unnamed>"),
                    applied.outcome
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            report_batch_failure(items, &order, &err);
            eprintln!(
                "error: the batch of {} documents failed; nothing was applied",
                items.len()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Sends each `resources[i].<field>` violation to the document that was i-th in the batch;
/// what names no item is reported once.
fn report_batch_failure(items: &[Item], order: &[usize], err: &ClientError) {
    let violations = err.field_violations();
    let mut per_document: Vec<Vec<Problem>> = vec![Vec::new(); items.len()];
    let mut unplaced = Vec::new();
    for (field, description) in violations {
        let placed = field
            .strip_prefix("resources[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(index, rest)| Some((index.parse::<usize>().ok()?, rest)))
            .and_then(|(index, rest)| Some((*order.get(index)?, rest.trim_start_matches('.'))));
        match placed {
            Some((document, rest)) => per_document[document].push(Problem::new(rest, description)),
            None => unplaced.push(format!("{field}: {description}")),
        }
    }
    for (item, problems) in items.iter().zip(&per_document) {
        if !problems.is_empty() {
            item.document.report(problems);
        }
    }
    if per_document.iter().all(Vec::is_empty) {
        eprintln!("error: {}", server_message(err));
    }
    for line in unplaced {
        eprintln!("error: {line}");
    }
}

async fn apply_manifest(client: &Client, value: &Value, dry_run: bool) -> Result<String, Failure> {
    let kind = value["kind"].as_str().unwrap_or_default();
    if dry_run {
        client
            .parse_manifest(value)
            .map_err(|e| Failure::plain(e.to_string()))?;
        let slug = manifest::manifest_slug(value);
        let mut shown = value.clone();
        shown["metadata"]["slug"] = Value::String(slug);
        return Ok(format!(
            "{} valid (dry run)",
            reference(client, kind, &shown, "<unnamed>")
        ));
    }
    let applied = client
        .apply(value)
        .await
        .map_err(|e| Failure::from_client(&e))?;
    Ok(format!(
        "{} {}",
        reference(client, kind, &applied.resource, "<unnamed>"),
        applied.outcome
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(number: usize) -> Document {
        Document::standalone("stack.yaml", number, Ok(Value::Null))
    }

    fn item<'a>(
        document: &'a Document,
        provides: Option<(&str, &str)>,
        references: &[(&str, &str)],
    ) -> Item<'a> {
        Item {
            document,
            plan: Err(vec![Problem::from(
                "not applied in these tests".to_string(),
            )]),
            provides: provides.map(|(kind, slug)| (kind.into(), slug.into())),
            id: None,
            references: references
                .iter()
                .enumerate()
                .map(|(i, (kind, slug))| Reference {
                    path: format!("spec.skillRefs[{i}]"),
                    kind: (*kind).into(),
                    slug: (*slug).into(),
                })
                .collect(),
            spec_strings: Vec::new(),
            declared: Vec::new(),
        }
    }

    #[test]
    fn documents_follow_what_they_reference_and_keep_their_order_otherwise() {
        let docs: Vec<Document> = (1..=4).map(document).collect();
        let items = vec![
            item(&docs[0], Some(("Agent", "a")), &[("Skill", "s")]),
            item(&docs[1], Some(("Environment", "e")), &[]),
            item(&docs[2], Some(("Skill", "s")), &[]),
            item(&docs[3], Some(("Agent", "b")), &[]),
        ];
        assert_eq!(dependency_order(&items), vec![1, 2, 0, 3]);
    }

    #[test]
    fn a_cycle_keeps_the_order_given_after_what_is_ready() {
        let docs: Vec<Document> = (1..=3).map(document).collect();
        let items = vec![
            item(&docs[0], Some(("Skill", "x")), &[("Skill", "y")]),
            item(&docs[1], Some(("Skill", "y")), &[("Skill", "x")]),
            item(&docs[2], None, &[]),
        ];
        assert_eq!(dependency_order(&items), vec![2, 0, 1]);
    }

    #[test]
    fn a_parent_named_by_id_comes_first() {
        let docs: Vec<Document> = (1..=2).map(document).collect();
        let mut items = vec![item(&docs[0], None, &[]), item(&docs[1], None, &[])];
        items[0].spec_strings = vec!["agt-1".into()];
        items[1].id = Some("agt-1".into());
        assert_eq!(dependency_order(&items), vec![1, 0]);
    }

    #[test]
    fn a_failure_concerns_the_fields_the_server_named_in_either_spelling() {
        let failure = Failure::of_problems(vec![Problem::new(
            "spec.skill_refs[1]",
            "Skill \"x\" does not exist",
        )]);
        assert!(failure.concerns("spec.skillRefs[1]"));
        assert!(!failure.concerns("spec.skillRefs[0]"));
        assert!(!failure.concerns("spec.skillRefs[11]"));
        let nested = Failure::of_problems(vec![Problem::new("spec.skillRefs[0].slug", "missing")]);
        assert!(nested.concerns("spec.skillRefs[0]"));
        let without_details = Failure::plain("spec.skillRefs[2]: missing".into());
        assert!(without_details.concerns("spec.skillRefs[2]"));
    }
}
