//! The FreeSWITCH join step on telephony nodes: FreeSWITCH started with the cluster
//! settings of `/etc/freeswitch/r2a/vars.xml` once the shared volume is mounted (its
//! recordings live there), or, in an image built with `vendor = "skip"`, reported
//! absent: the node still registers in the pool and the rest of it works.

use super::Progress;
use crate::agent::host::Invocation;
use crate::agent::steps::Context;

/// FreeSWITCH's unit, from the vendor's package.
pub const UNIT: &str = "freeswitch.service";
/// Its binary; the package is installed when it is there.
pub const BINARY: &str = "/usr/bin/freeswitch";

/// One attempt: absent, or started and active.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    if !context.root.path(BINARY).exists() {
        return Ok(Progress::in_place(format!(
            "FreeSWITCH is absent: the image was built without the vendor packages \
             ({BINARY} missing); nothing to start"
        )));
    }
    let started = super::ensure_started(context.host, UNIT)?;
    let state = Invocation::new("systemctl", ["is-active", UNIT]);
    if context
        .host
        .probe(&state, super::SYSTEMCTL_NOT_ACTIVE)?
        .is_none()
    {
        return Ok(Progress::waiting(format!(
            "waiting for {UNIT} to be active"
        )));
    }
    let detail = format!("{UNIT} is active");
    Ok(if started {
        Progress::changed(detail)
    } else {
        Progress::in_place(detail)
    })
}
