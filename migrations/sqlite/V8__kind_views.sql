-- One read-only view per kind, for people at the sqlite3 prompt:
--   SELECT name, slug, revision, updated_at FROM agents WHERE org_id = 'local';
-- Each has the columns every kind shares (id, org_id, name, slug, labels as JSON, revision,
-- created_at, updated_at from the audit) and the kind's key spec and status fields. They read
-- the resources table, so they are always current; write through the API, not through them.
-- api_keys shows each key's fingerprint, never its hash.

CREATE VIEW agents AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.description') AS description,
    json_extract(data, '$.spec.instructions') AS instructions,
    json_extract(data, '$.status.defaultInstanceId') AS default_instance_id
FROM resources
WHERE kind = 'Agent';

CREATE VIEW agent_instances AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.agentId') AS agent_id,
    json_extract(data, '$.spec.description') AS description
FROM resources
WHERE kind = 'AgentInstance';

CREATE VIEW sessions AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.agentInstanceId') AS agent_instance_id,
    json_extract(data, '$.spec.subject') AS subject
FROM resources
WHERE kind = 'Session';

CREATE VIEW agent_executions AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.sessionId') AS session_id,
    json_extract(data, '$.spec.agentId') AS agent_id,
    json_extract(data, '$.spec.message') AS message,
    json_extract(data, '$.status.phase') AS phase
FROM resources
WHERE kind = 'AgentExecution';

CREATE VIEW skills AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.tag') AS tag,
    json_extract(data, '$.status.versionHash') AS version_hash,
    json_extract(data, '$.status.state') AS state
FROM resources
WHERE kind = 'Skill';

CREATE VIEW mcp_servers AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.description') AS description,
    json_extract(data, '$.spec.stdio.command') AS command,
    json_extract(data, '$.spec.http.url') AS url,
    json_extract(data, '$.spec.docker.image') AS image
FROM resources
WHERE kind = 'McpServer';

CREATE VIEW workflows AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.description') AS description,
    json_extract(data, '$.spec.document.name') AS document_name,
    json_extract(data, '$.spec.document.version') AS document_version,
    json_extract(data, '$.status.defaultInstanceId') AS default_instance_id
FROM resources
WHERE kind = 'Workflow';

CREATE VIEW workflow_instances AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.workflowId') AS workflow_id,
    json_extract(data, '$.spec.description') AS description
FROM resources
WHERE kind = 'WorkflowInstance';

CREATE VIEW workflow_executions AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.workflowInstanceId') AS workflow_instance_id,
    json_extract(data, '$.spec.workflowId') AS workflow_id,
    json_extract(data, '$.spec.triggerMessage') AS trigger_message,
    json_extract(data, '$.status.phase') AS phase
FROM resources
WHERE kind = 'WorkflowExecution';

CREATE VIEW environments AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.description') AS description
FROM resources
WHERE kind = 'Environment';

CREATE VIEW execution_contexts AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.executionId') AS execution_id
FROM resources
WHERE kind = 'ExecutionContext';

CREATE VIEW identity_accounts AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.email') AS email,
    json_extract(data, '$.spec.idpId') AS idp_id,
    json_extract(data, '$.spec.isMachineAccount') AS is_machine_account
FROM resources
WHERE kind = 'IdentityAccount';

CREATE VIEW api_keys AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.status.audit.specAudit.createdBy.id') AS account_id,
    json_extract(data, '$.spec.fingerprint') AS fingerprint,
    json_extract(data, '$.spec.expiresAt') AS expires_at,
    json_extract(data, '$.spec.neverExpires') AS never_expires,
    json_extract(data, '$.status.lastUsedAt') AS last_used_at
FROM resources
WHERE kind = 'ApiKey';

CREATE VIEW iam_policies AS
SELECT
    id,
    org_id,
    json_extract(data, '$.metadata.name') AS name,
    slug,
    json_extract(data, '$.metadata.labels') AS labels,
    revision,
    json_extract(data, '$.status.audit.specAudit.createdAt') AS created_at,
    json_extract(data, '$.status.audit.specAudit.updatedAt') AS updated_at,
    json_extract(data, '$.spec.principal.kind') AS principal_kind,
    json_extract(data, '$.spec.principal.id') AS principal_id,
    json_extract(data, '$.spec.resource.kind') AS resource_kind,
    json_extract(data, '$.spec.resource.id') AS resource_id,
    json_extract(data, '$.spec.relation') AS relation
FROM resources
WHERE kind = 'IamPolicy';
