//! What several store tests share.
#![allow(dead_code)]

use stigmer_store::{Mutation, NewResource, Scope};

/// One write creating Agent `agt-<n>`, its slug its id.
pub fn create(n: usize) -> Vec<Mutation> {
    let id = format!("agt-{n:04}");
    vec![Mutation::Create(NewResource {
        scope: Scope::new("Agent", "local"),
        id: id.clone(),
        slug: id.clone(),
        data: format!(r#"{{"metadata":{{"id":"{id}"}}}}"#),
        proto: None,
    })]
}
