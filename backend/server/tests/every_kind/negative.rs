//! What the server must refuse, kind by kind: writes that break a rule or name a missing
//! resource, a taken slug, and malformed read requests. Each refusal stores nothing.

use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::OTHER_ORG;
use crate::api::Api;
use crate::checks::{assert_invalid, assert_refused, check_created};
use crate::common::{TestServer, expect_code};
use crate::fixture::Fixture;
use crate::json::{id_of, patched, slug_of};
use crate::kind_case::{KindCase, Refusal, Rpc};

/// A patch over a valid request that breaks one rule, the field the BadRequest must name, and
/// what the patch does (for messages).
type Breaking = (Value, &'static str, String);

pub async fn invalid_writes_and_requests_are_rejected(case: &KindCase) {
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::build(&server, case.parents).await;
    let api = Api::new(&server, case, &fixture);
    let valid = api.request(Some(&format!("Invalid {k}")), &case.spec);
    let breaking = rule_breaking_patches(case);
    rule_breaking_writes_are_refused(&api, &valid, &breaking).await;
    writes_naming_missing_resources_are_refused(&api, &valid).await;
    assert_eq!(
        api.rows(),
        0,
        "{k}: nothing may be stored by rejected writes"
    );
    assert_eq!(
        api.all_rows(),
        0,
        "{k}: rejected writes store nothing of another kind either (default instance, session)"
    );

    // The valid request itself is accepted (so the rejections above were about the patch).
    let created = api
        .create(&valid)
        .await
        .unwrap_or_else(|s| panic!("{k}: valid create failed: {s:?}"));
    if !case.named() {
        an_unnamed_resource_takes_its_id_as_slug(&api).await;
    }
    a_given_slug_is_enough_and_wins_over_the_name(&api).await;
    if case.has(Rpc::Update) {
        rule_breaking_updates_are_refused(&api, &created, &breaking).await;
    }
    invalid_reads_are_refused(&api, &slug_of(&created)).await;
    if case.has(Rpc::List) {
        another_orgs_page_token_is_refused(&api).await;
    }
}

/// The table's rule-breaking patches, and those every kind shares.
fn rule_breaking_patches(case: &KindCase) -> Vec<Breaking> {
    let other_kind = if case.name == "Agent" {
        "Workflow"
    } else {
        "Agent"
    };
    let mut patches: Vec<Breaking> = case
        .invalid
        .iter()
        .map(|(patch, field)| (patch.clone(), *field, format!("rule-breaking {patch}")))
        .collect();
    patches.extend([
        (
            json!({ "apiVersion": "agentic.stigmer.ai/v2" }),
            "apiVersion",
            "wrong apiVersion".to_string(),
        ),
        (
            json!({ "kind": other_kind }),
            "kind",
            format!("kind {other_kind}"),
        ),
        (
            json!({ "metadata": { "slug": "Not_A_Slug" } }),
            "metadata.slug",
            "invalid slug".to_string(),
        ),
    ]);
    if case.named() {
        patches.push((
            json!({ "metadata": { "name": null } }),
            "metadata.name",
            "no name or slug".to_string(),
        ));
        patches.push((
            json!({ "metadata": { "name": "!!! ???" } }),
            "metadata.name",
            "a name without letters or digits".to_string(),
        ));
    }
    patches.push((
        json!({ "metadata": { "name": "a".repeat(64) } }),
        "metadata.name",
        "a name whose slug is over 63 characters".to_string(),
    ));
    patches
}

async fn rule_breaking_writes_are_refused(api: &Api<'_>, valid: &Value, breaking: &[Breaking]) {
    let case = api.case;
    for (patch, field, what) in breaking {
        let request = patched(valid, patch);
        assert_invalid(
            case,
            api.create(&request).await,
            field,
            &format!("create, {what}"),
        );
        if case.has(Rpc::Apply) {
            assert_invalid(
                case,
                api.apply(&request).await,
                field,
                &format!("apply, {what}"),
            );
        }
    }
}

/// Parents and references that do not exist (in this org) are refused with the exact
/// violation.
async fn writes_naming_missing_resources_are_refused(api: &Api<'_>, valid: &Value) {
    let case = api.case;
    for refusal in &case.refusals {
        let request = patched(valid, &api.resolve(&refusal.patch));
        let description = description_of(api, refusal);
        let what = format!("refused {}", refusal.patch);
        let result = api.create(&request).await;
        assert_refused(
            case,
            result,
            refusal.field,
            description.as_deref(),
            &format!("create, {what}"),
        );
        if case.has(Rpc::Apply) {
            let result = api.apply(&request).await;
            assert_refused(
                case,
                result,
                refusal.field,
                description.as_deref(),
                &format!("apply, {what}"),
            );
        }
    }
}

/// The violation's description a refusal expects, with this org's parents substituted.
fn description_of(api: &Api<'_>, refusal: &Refusal) -> Option<String> {
    refusal
        .description
        .as_ref()
        .map(|d| api.fixture.resolve_text(d, api.org))
}

/// Kinds never addressed by reference accept a resource without a name (slug = id); apply
/// finds its target by the name's slug, so it needs one even there.
async fn an_unnamed_resource_takes_its_id_as_slug(api: &Api<'_>) {
    let (k, case) = (api.case.name, api.case);
    let unnamed = api
        .create(&api.request(None, &case.spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: unnamed create failed: {s:?}"));
    check_created(case, &unnamed, None, None);
    if case.has(Rpc::Apply) {
        let result = api.apply(&api.request(None, &case.spec)).await;
        assert_invalid(case, result, "metadata.name", "apply without a name");
    }
}

async fn a_given_slug_is_enough_and_wins_over_the_name(api: &Api<'_>) {
    let (k, case) = (api.case.name, api.case);
    let slug_only = patched(
        &api.request(None, &case.spec),
        &json!({ "metadata": { "slug": "only-a-slug" } }),
    );
    let created_slug_only = api
        .create(&slug_only)
        .await
        .unwrap_or_else(|s| panic!("{k}: create with only a slug failed: {s:?}"));
    check_created(case, &created_slug_only, None, Some("only-a-slug"));
    let both = patched(
        &api.request(Some("Some Name"), &case.spec),
        &json!({ "metadata": { "slug": "chosen-slug" } }),
    );
    let created_both = api
        .create(&both)
        .await
        .unwrap_or_else(|s| panic!("{k}: create with name and slug failed: {s:?}"));
    check_created(case, &created_both, Some("Some Name"), Some("chosen-slug"));
}

/// Update refuses what create refuses (but a missing name: update keeps the stored slug), and
/// the parents it re-checks; the refused updates change nothing.
async fn rule_breaking_updates_are_refused(api: &Api<'_>, created: &Value, breaking: &[Breaking]) {
    let (k, case) = (api.case.name, api.case);
    for (patch, field, what) in breaking {
        if *field == "metadata.name" {
            continue;
        }
        let request = patched(created, patch);
        assert_invalid(
            case,
            api.update(&request).await,
            field,
            &format!("update, {what}"),
        );
    }
    for refusal in case.refusals.iter().filter(|r| r.on_update) {
        let request = patched(created, &api.resolve(&refusal.patch));
        let result = api.update(&request).await;
        assert_refused(
            case,
            result,
            refusal.field,
            description_of(api, refusal).as_deref(),
            &format!("update, refused {}", refusal.patch),
        );
    }
    assert_eq!(
        api.get(&id_of(created)).await.expect("get"),
        *created,
        "{k}: rejected updates changed nothing"
    );
}

/// Id, reference and list requests are checked like resources. `slug` is one a
/// getByReference of the wrong kind names.
pub async fn invalid_reads_are_refused(api: &Api<'_>, slug: &str) {
    let case = api.case;
    assert_invalid(case, api.get("").await, "value", "get with an empty id");
    if case.has(Rpc::GetByReference) {
        let result = api.get_by_reference(&json!({})).await;
        assert_invalid(case, result, "slug", "getByReference without slug");
        let wrong = if case.name == "Agent" {
            "workflow"
        } else {
            "agent"
        };
        let result = api
            .get_by_reference(&json!({ "slug": slug, "kind": wrong }))
            .await;
        assert_invalid(case, result, "kind", "getByReference with another kind");
    }
    if case.has(Rpc::List) {
        assert_invalid(case, api.list(1001, "").await, "pageSize", "page_size 1001");
        assert_invalid(case, api.list(-1, "").await, "pageSize", "page_size -1");
        let result = api.list(2, "not-a-token!").await;
        assert_invalid(case, result, "pageToken", "a garbage page_token");
    }
}

/// A page token of the same listing but another org is refused; page_size 1000 is allowed.
async fn another_orgs_page_token_is_refused(api: &Api<'_>) {
    let (k, case) = (api.case.name, api.case);
    let other = api.as_org(OTHER_ORG);
    for i in 0..3 {
        other
            .create(&other.request(Some(&format!("Other {k} {i}")), &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: create in {OTHER_ORG} failed: {s:?}"));
    }
    let page = other.list(1, "").await.expect("other org list");
    let token = page["nextPageToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !token.is_empty(),
        "{k}: 3 resources in pages of 1 must continue"
    );
    let result = api.list(1, &token).await;
    assert_invalid(case, result, "pageToken", "another org's page_token");
    assert!(
        api.list(1000, "").await.is_ok(),
        "{k}: page_size 1000 is allowed"
    );
}

/// A slug is taken once per (org, kind): a create that derives or names it again is
/// ALREADY_EXISTS and stores nothing, as is renaming another resource onto it; the same slug
/// in another org is fine.
pub async fn a_taken_slug_is_refused_within_its_org(case: &KindCase) {
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::build(&server, case.parents).await;
    let api = Api::new(&server, case, &fixture);
    let name = format!("Dup {k}");
    let slug = format!("dup-{}", k.to_lowercase());
    let first = api
        .create(&api.request(Some(&name), &case.spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: create failed: {s:?}"));
    // With its default instance or its session, when the kind makes one.
    let stored = api.all_rows();
    assert_eq!(slug_of(&first), slug, "{k}: slug");

    let same_slug = [
        api.request(Some(&name), &case.changed_spec),
        api.request(Some(&format!("  dup   {}  ", k.to_uppercase())), &case.spec),
        patched(
            &api.request(Some("Something Else"), &case.spec),
            &json!({ "metadata": { "slug": slug } }),
        ),
    ];
    for request in &same_slug {
        let result = api.create(request).await;
        let status = expect_code(result, Code::AlreadyExists);
        let info = status
            .get_details_resource_info()
            .unwrap_or_else(|| panic!("{k}: ALREADY_EXISTS without ResourceInfo: {status:?}"));
        assert_eq!(info.resource_type, k, "{k}: ResourceInfo.resource_type");
        assert_eq!(info.resource_name, slug, "{k}: ResourceInfo.resource_name");
    }
    assert_eq!(api.rows(), 1, "{k}: duplicates stored nothing");
    assert_eq!(
        api.all_rows(),
        stored,
        "{k}: a refused create leaves nothing of another kind behind (default instance, session)"
    );
    assert_eq!(
        api.get(&id_of(&first)).await.expect("get"),
        first,
        "{k}: the first resource is unchanged"
    );

    let other = api.as_org(OTHER_ORG);
    let foreign = other
        .create(&other.request(Some(&name), &case.spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: same slug in another org failed: {s:?}"));
    assert_eq!(slug_of(&foreign), slug, "{k}: same slug in {OTHER_ORG}");
    assert_ne!(id_of(&foreign), id_of(&first), "{k}: a different resource");

    if case.has(Rpc::Update) {
        let second = api
            .create(&api.request(Some(&format!("Second {k}")), &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: second create failed: {s:?}"));
        let onto = patched(&second, &json!({ "metadata": { "slug": slug } }));
        expect_code(api.update(&onto).await, Code::AlreadyExists);
        assert_eq!(
            api.get(&id_of(&second)).await.expect("get"),
            second,
            "{k}: the refused rename changed nothing"
        );
    }
}
