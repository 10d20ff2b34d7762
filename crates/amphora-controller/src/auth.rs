//! Who is calling, and what upstream's default policy lets them do.
//!
//! `noauth` makes every caller an administrator (upstream does the same);
//! the project comes from `X-Project-Id` when given. With `keystone`, the
//! token is validated by Keystone (`keystone.rs`) and the roles decide.
//! The rules are upstream's defaults since 16.0 (Keystone's default roles),
//! with the deprecated `load-balancer_*` roles still honoured, as
//! oslo.policy does while the old defaults are not enforced away.

use axum::http::HeaderMap;

/// The project of a noauth caller who names none.
pub const NOAUTH_PROJECT: &str = "admin";

/// The caller of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub roles: Vec<String>,
    /// `is_admin:True`: noauth, or an administrator role.
    pub is_admin: bool,
}

impl Context {
    /// The noauth caller: an administrator, in the project `X-Project-Id`
    /// names, else in `NOAUTH_PROJECT` (upstream has none and refuses to
    /// create objects: "Missing project ID", which leaves the CLI and SDK
    /// with auth type none unable to create anything).
    pub fn noauth(headers: &HeaderMap) -> Context {
        let header =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_owned);
        Context {
            project_id: header("x-project-id").or_else(|| header("x-tenant-id")).or(Some(NOAUTH_PROJECT.to_owned())),
            user_id: header("x-user-id"),
            roles: vec!["admin".into()],
            is_admin: true,
        }
    }

    /// A Keystone-validated caller.
    pub fn from_roles(project_id: Option<String>, user_id: Option<String>, roles: Vec<String>) -> Context {
        let is_admin = roles.iter().any(|r| r == "admin" || r == "load-balancer_admin");
        Context { project_id, user_id, roles, is_admin }
    }

    fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    fn owns(&self, project_id: &str) -> bool {
        self.project_id.as_deref() == Some(project_id)
    }

    /// `load-balancer:admin`.
    pub fn is_lb_admin(&self) -> bool {
        self.is_admin
    }

    /// `load-balancer:global_observer` or admin: may read every project.
    pub fn can_read_global(&self) -> bool {
        self.is_admin || self.has("load-balancer_global_observer")
    }

    /// `load-balancer:read` on an object of `project_id`.
    pub fn can_read(&self, project_id: &str) -> bool {
        self.can_read_global()
            || (self.owns(project_id)
                && ["reader", "member", "load-balancer_observer", "load-balancer_member"].iter().any(|r| self.has(r)))
    }

    /// `load-balancer:write` on an object of `project_id`.
    pub fn can_write(&self, project_id: &str) -> bool {
        self.is_admin || (self.owns(project_id) && ["member", "load-balancer_member"].iter().any(|r| self.has(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(project: &str, roles: &[&str]) -> Context {
        Context::from_roles(Some(project.into()), None, roles.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn members_write_their_own_project_only() {
        let alice = ctx("a", &["member", "reader"]);
        assert!(alice.can_write("a") && alice.can_read("a"));
        assert!(!alice.can_write("b") && !alice.can_read("b"));
        assert!(!alice.is_lb_admin());
    }

    #[test]
    fn readers_read_and_admins_do_everything() {
        let reader = ctx("a", &["reader"]);
        assert!(reader.can_read("a") && !reader.can_write("a"));
        let lb_admin = ctx("x", &["load-balancer_admin"]);
        assert!(lb_admin.is_lb_admin() && lb_admin.can_write("a") && lb_admin.can_read_global());
        let observer = ctx("x", &["load-balancer_global_observer"]);
        assert!(observer.can_read("a") && !observer.can_write("a"));
    }
}
