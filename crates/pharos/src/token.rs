//! `pharos token ...`: API tokens for tenants.

use crate::client::*;
use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for a tenant (needs an admin token); printed once.
    Create {
        /// The tenant (or --tenant).
        #[arg(value_name = "TENANT", required_unless_present = "tenant")]
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        tenant: Option<String>,
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token (an admin token revokes any; a tenant's, its own).
    Revoke {
        /// The token to revoke.
        #[arg(value_name = "TOKEN")]
        revoked: String,
    },
}

pub fn token(cmd: TokenCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        TokenCommand::Create {
            name,
            tenant,
            admin,
            label,
        } => {
            let tenant = name.or(tenant).unwrap_or_default();
            let v = c.send_json(
                "POST",
                "/v1/tokens",
                &serde_json::json!({"tenant": tenant, "admin": admin, "label": label}),
            )?;
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        TokenCommand::Revoke { revoked } => {
            c.send_json(
                "POST",
                "/v1/tokens/revoke",
                &serde_json::json!({ "token": revoked }),
            )?;
            println!("revoked");
        }
    }
    Ok(())
}
