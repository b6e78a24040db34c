//! The OpenAPI 3 document served at `/openapi.json`.

use serde_json::{Value, json};

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true,
           "description": "the job's id (`42` or `training-42`)",
           "schema": {"type": "string"}})
}

fn err(desc: &str) -> Value {
    json!({"description": desc,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn job_ok(desc: &str) -> Value {
    json!({"description": desc,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}})
}

/// The manifest as JSON Schema: the fields whose rules JSON Schema can state exactly
/// (so that a schema-driven fuzzer's valid requests are valid). `gpu_type`,
/// `data_stores` and `evaluation_metrics` are accepted too; see the README.
fn manifest_schema(queues: &[String]) -> Value {
    json!({
      "type": "object",
      "required": ["name", "framework"],
      "additionalProperties": false,
      "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"},
        "description": {"type": "string", "maxLength": 4096},
        "version": {"type": "string"},
        "learners": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 1},
        "cpus": {"type": "number", "minimum": 0.1, "maximum": 1024, "default": 1},
        "gpus": {"type": "integer", "minimum": 0, "maximum": 64, "default": 0},
        "memory": {"type": "string", "pattern": "^[1-9][0-9]{0,2}(Mi|Gi|MiB|GiB|Gb)$"},
        "max_restarts": {"type": "integer", "minimum": 0, "maximum": 100, "default": 3},
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000, "default": 0,
                     "description": "above the tenant's ceiling (tenant_limits.max_priority): 403"},
        "queue": {"type": "string", "enum": queues},
        "framework": {
          "type": "object", "required": ["name", "command"], "additionalProperties": false,
          "properties": {
            "name": {"type": "string", "pattern": "\\S"},
            "version": {"type": "string"},
            "command": {"type": "string", "pattern": "\\S",
                        "description": "run by /bin/sh in each learner's environment"}
          }
        }
      }
    })
}

pub fn document(queues: &[String]) -> Value {
    let common = json!({
        "401": err("missing or unknown token"),
        "404": err("no such job for this tenant"),
    });
    let with = |extra: Value| {
        let mut m = common.clone();
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            m[k] = v;
        }
        m
    };
    json!({
      "openapi": "3.0.3",
      "info": {
        "title": "pharos",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "The pharos control plane: training jobs (FfDL's /v1/models shape), their status, logs and evaluation metrics."
      },
      "security": [{"bearer": []}],
      "paths": {
        "/healthz": {"get": {"summary": "liveness", "security": [],
            "responses": {"200": {"description": "ok"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
            "responses": {"200": {"description": "text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "this document", "security": [],
            "responses": {"200": {"description": "OpenAPI 3"}}}},
        "/v1/models": {
          "post": {
            "summary": "submit a training job",
            "description": "The body is the manifest (YAML or JSON), or multipart/form-data with a `manifest` part and an optional `model_definition` part (a tar archive).",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
            "requestBody": {"required": true, "content": {
              "application/json": {"schema": {"$ref": "#/components/schemas/Manifest"}},
              "application/yaml": {"schema": {"$ref": "#/components/schemas/Manifest"}},
              "multipart/form-data": {"schema": {"type": "object", "required": ["manifest"],
                "properties": {"manifest": {"$ref": "#/components/schemas/Manifest"},
                               "model_definition": {"type": "string", "format": "binary"}}},
                "encoding": {"manifest": {"contentType": "application/json"}}}
            }},
            "responses": with(json!({
              "201": {"description": "accepted and queued", "content": {"application/json":
                  {"schema": {"$ref": "#/components/schemas/Submitted"}}}},
              "200": {"description": "an earlier submission with the same Idempotency-Key",
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submitted"}}}},
              "400": err("invalid manifest or archive; `field` names what is wrong"),
              "413": err("body larger than the limit"),
              "403": err("priority above the tenant's ceiling"),
              "429": err("the tenant has as many unfinished jobs as it may have"),
              "507": err("no space to store the archive")
            }))
          },
          "get": {
            "summary": "list the caller's jobs",
            "parameters": [{"name": "state", "in": "query", "required": false,
                            "schema": {"type": "string", "enum": ["QUEUED","PENDING","DOWNLOADING","PROCESSING","STORING","COMPLETED","FAILED","HALTED"]}},
                           {"name": "after", "in": "query", "required": false,
                            "description": "jobs with ids above this (the previous page's next_after)",
                            "schema": {"type": "integer", "minimum": 0}},
                           {"name": "limit", "in": "query", "required": false,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500}}],
            "responses": with(json!({
              "200": {"description": "jobs", "content": {"application/json": {"schema":
                  {"type": "object", "properties": {"models": {"type": "array",
                   "items": {"$ref": "#/components/schemas/Job"}}}}}}},
              "400": err("unknown state")
            }))
          }
        },
        "/v1/models/{id}": {
          "parameters": [id_param()],
          "get": {"summary": "a job with its status history", "responses": with(json!({"200": job_ok("the job")}))},
          "patch": {
            "summary": "halt or resume a job",
            "requestBody": {"required": true, "content": {"application/json": {"schema":
                {"type": "object", "required": ["status"], "additionalProperties": false,
                 "properties": {"status": {"type": "string", "enum": ["halt", "resume"]}}}}}},
            "responses": with(json!({"202": job_ok("accepted"), "400": err("bad body"),
                                     "409": err("not possible in the job's state"),
                                     "413": err("body larger than the limit")}))
          },
          "delete": {"summary": "halt (if running) and delete a job",
                     "responses": with(json!({"202": {"description": "deleting"}}))}
        },
        "/v1/models/{id}/logs": {
          "parameters": [id_param(),
            {"name": "learner", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1024}},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000000000000i64}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
            {"name": "follow", "in": "query", "schema": {"type": "boolean"}}],
          "get": {"summary": "a page of a learner's log lines, or (follow=true) a stream until the job ends",
                  "responses": with(json!({"200": {"description": "log lines"}, "400": err("bad query")}))}
        },
        "/v1/models/{id}/metrics": {
          "parameters": [id_param()],
          "get": {"summary": "evaluation metrics extracted from the logs",
                  "responses": with(json!({"200": {"description": "points and last values"}}))}
        },
        "/v1/models/{id}/events": {
          "parameters": [id_param()],
          "get": {"summary": "the job's events", "responses": with(json!({"200": {"description": "events"}}))}
        },
        "/v1/models/{id}/definition": {
          "parameters": [id_param()],
          "get": {"summary": "download the uploaded model archive (an empty archive when none was uploaded)",
                  "responses": with(json!({"200": {"description": "a tar archive",
                      "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}}))}
        },
        "/v1/whoami": {
          "get": {"summary": "the tenant the caller's token names, and whether it is an admin's",
                  "responses": {"200": {"description": "{tenant, admin}"},
                                "401": err("missing or unknown token")}}
        },
        "/v1/tokens/revoke": {
          "post": {
            "summary": "revoke a token (the admin any, a tenant its own)",
            "requestBody": {"required": true, "content": {"application/json": {"schema":
                {"type": "object", "required": ["token"], "additionalProperties": false,
                 "properties": {"token": {"type": "string"}}}}}},
            "responses": {"204": {"description": "revoked"}, "400": err("bad body"),
                          "401": err("missing or unknown token"), "404": err("no such token"),
                          "413": err("body larger than the limit")}
          }
        },
        "/v1/tokens": {
          "post": {
            "summary": "create a token for a tenant (admin only)",
            "requestBody": {"required": true, "content": {"application/json": {"schema":
                {"type": "object", "required": ["tenant"], "additionalProperties": false,
                 "properties": {"tenant": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "admin": {"type": "boolean"},
                                "label": {"type": "string"}}}}}},
            "responses": {"201": {"description": "the token (shown once)"},
                          "400": err("bad body"), "401": err("missing or unknown token"),
                          "403": err("not an admin"), "413": err("body larger than the limit")}
          }
        }
      },
      "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
          "Manifest": manifest_schema(queues),
          "Error": {"type": "object", "required": ["error"], "properties": {
              "error": {"type": "string"}, "field": {"type": "string"}, "code": {"type": "string"}}},
          "Submitted": {"type": "object", "properties": {
              "model_id": {"type": "string"}, "id": {"type": "integer"},
              "state": {"type": "string"}, "created": {"type": "boolean"}}},
          "Job": {"type": "object", "properties": {
              "id": {"type": "integer"}, "model_id": {"type": "string"}, "name": {"type": "string"},
              "tenant": {"type": "string"}, "state": {"type": "string"},
              "error_code": {"type": "string", "nullable": true}, "message": {"type": "string"},
              "queue": {"type": "string"}, "priority": {"type": "integer"},
              "attempt": {"type": "integer"}, "restarts": {"type": "integer"},
              "wait_reason": {"type": "string", "nullable": true},
              "queue_position": {"type": "integer", "nullable": true}}}
        }
      }
    })
}
