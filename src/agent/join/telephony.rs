//! The telephony-pool join step: this telephony node registered in the shared
//! database's pool (its row in `telephony_nodes` and its entry in Kamailio's
//! `dispatcher` table), active. `r2a-node keep` then beats its heart every
//! [`HEARTBEAT_SECONDS`](crate::agent::pool::HEARTBEAT_SECONDS) and marks it inactive
//! on a clean stop.

use super::Progress;
use crate::agent::config::config_error;
use crate::agent::pool::{self, Registration};
use crate::agent::steps::Context;

/// The SIP port every telephony node listens on (the role's firewall opens it).
pub const SIP_PORT: u16 = 5060;

/// What this node registers: its name and address, and the role's capacity.
pub fn registration(context: &Context<'_>) -> anyhow::Result<Registration> {
    let capacity = context.role.capacity.as_ref().ok_or_else(|| {
        config_error(format!(
            "roles/{}.toml has no [capacity], which the telephony pool records",
            context.role.name
        ))
    })?;
    Ok(Registration {
        name: context.node.name.clone(),
        address: context.node.address,
        sip_port: SIP_PORT,
        max_calls: capacity.calls_per_node,
        max_extensions: capacity.extensions_per_node,
    })
}

/// One attempt: wait for the pool's schema, register, and check the pool sees the node
/// active.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    let registration = registration(context)?;
    match pool::query(context.host, pool::SCHEMA_READY_SQL) {
        Err(error) => {
            return Ok(Progress::waiting(format!(
                "waiting for the database through HAProxy: {error:#}"
            )));
        }
        Ok(ready) if ready.trim() != "t" => {
            return Ok(Progress::waiting(
                "waiting for the pool's schema (migration 3) on the primary",
            ));
        }
        Ok(_) => {}
    }
    pool::query(context.host, &registration.upsert_sql())?;
    let state = pool::query(context.host, &pool::state_sql(&registration.name))?;
    if state.trim() != "active" {
        return Ok(Progress::waiting(format!(
            "registered, but the pool shows this node `{}`",
            state.trim()
        )));
    }
    let detail = format!(
        "registered in the telephony pool as sip:{}:{} ({} calls, {} extensions)",
        registration.address,
        registration.sip_port,
        registration.max_calls,
        registration.max_extensions
    );
    Ok(if context.previous_marker.is_none() {
        Progress::changed(detail)
    } else {
        Progress::in_place(detail)
    })
}
