//! Filtering, sorting, pagination, links and `fields=` for every list and
//! show endpoint, as upstream's `PaginationHelper` does them, with its bugs
//! fixed (links keep the filters and `sort_dir`; `page_reverse` really
//! gives the page before the marker, in order). Resources describe their
//! columns once (`Resource`); rows come back as JSON objects keyed by the
//! API's field names.

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::error::{ApiError, ApiResult};
use crate::db::{Backend, Db};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Bool,
    /// Naive ISO time stored as text.
    Time,
    /// JSON stored as text (lists, objects).
    Json,
}

/// One attribute of a resource: its API name, its column, and the other
/// names upstream accepts for it in filters and sort keys.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub column: &'static str,
    pub kind: Kind,
    pub aliases: &'static [&'static str],
    /// Whether it can be a filter (JSON columns cannot).
    pub filter: bool,
    /// Read for filters and post-processing but not part of the answer
    /// (`strip_hidden`), e.g. a listener's `loadbalancer_id`.
    pub hidden: bool,
    /// The column is NOT NULL: sorted and compared bare, so the engine can
    /// walk an index (`amphora_created`) instead of sorting every row.
    pub not_null: bool,
}

impl Field {
    pub const fn new(name: &'static str, column: &'static str, kind: Kind) -> Field {
        // Every table declares its `id` and `created_at` NOT NULL (the
        // migrations), and they are the tie-breakers of every sort.
        let not_null = matches!(column.as_bytes(), b"id" | b"created_at");
        Field { name, column, kind, aliases: &[], filter: !matches!(kind, Kind::Json), hidden: false, not_null }
    }

    pub const fn hidden(mut self) -> Field {
        self.hidden = true;
        self
    }

    pub const fn aka(mut self, aliases: &'static [&'static str]) -> Field {
        self.aliases = aliases;
        self
    }

    fn answers_to(&self, key: &str) -> bool {
        self.name == key || self.column == key || self.aliases.contains(&key)
    }
}

#[derive(Debug)]
pub struct Resource {
    pub table: &'static str,
    /// The collection key of list answers (`amphorae`, `loadbalancers`).
    pub plural: &'static str,
    pub fields: &'static [Field],
}

impl Resource {
    pub fn field(&self, key: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.answers_to(key))
    }

    /// `col1, col2, ...` for a SELECT that `row_json` reads.
    pub fn columns(&self, prefix: &str) -> String {
        self.fields.iter().map(|f| select_expr(f, prefix)).collect::<Vec<_>>().join(", ")
    }

    /// A row read with `columns()` as a JSON object of API names.
    pub fn row_json(&self, row: &AnyRow) -> Result<Map<String, Value>, sqlx::Error> {
        let mut out = Map::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            let v = match f.kind {
                Kind::Text | Kind::Time => row.try_get::<Option<String>, _>(i)?.map(Value::String),
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::from),
                Kind::Bool => row.try_get::<Option<i64>, _>(i)?.map(|b| Value::Bool(b != 0)),
                Kind::Json => {
                    row.try_get::<Option<String>, _>(i)?.map(|s| serde_json::from_str(&s).unwrap_or(Value::Null))
                }
            };
            out.insert(f.name.to_owned(), v.unwrap_or(Value::Null));
        }
        Ok(out)
    }
}

impl Resource {
    /// A SQL expression giving a row as the text of the JSON object that
    /// `row_json` then `strip_hidden` and `select_fields(fields)` would
    /// make, keys in the same (sorted) order: the engine renders the page.
    pub fn json_expr(&self, backend: Backend, fields: Option<&[String]>) -> String {
        self.json_expr_with(backend, fields, &[])
    }

    /// `json_expr` with `extra` keys: each a SQL expression (a JSON value
    /// expression from `json_value`, or a plain scalar), replacing the
    /// field of the same name or adding a key.
    pub fn json_expr_with(&self, backend: Backend, fields: Option<&[String]>, extra: &[(&str, String)]) -> String {
        let wanted = |name: &str| fields.is_none_or(|names| names.iter().any(|n| n == name));
        let mut shown: Vec<(&str, String)> = self
            .fields
            .iter()
            .filter(|f| !f.hidden && wanted(f.name) && !extra.iter().any(|(k, _)| *k == f.name))
            .map(|f| {
                let c = f.column;
                let value = match f.kind {
                    Kind::Bool => bool_json(backend, c),
                    Kind::Json => json_value(backend, c),
                    _ => c.to_owned(),
                };
                (f.name, value)
            })
            .collect();
        shown.extend(extra.iter().filter(|(k, _)| wanted(k)).map(|(k, v)| (*k, v.clone())));
        shown.sort_by_key(|(name, _)| *name);
        let pairs: Vec<String> = shown.iter().map(|(name, value)| format!("'{name}', {value}")).collect();
        match backend {
            Backend::Sqlite => format!("json_object({})", pairs.join(", ")),
            Backend::Postgres => format!("CAST(json_build_object({}) AS TEXT)", pairs.join(", ")),
        }
    }

    /// Drops the hidden fields of a row read with `row_json`.
    pub fn strip_hidden(&self, mut row: Map<String, Value>) -> Map<String, Value> {
        for f in self.fields.iter().filter(|f| f.hidden) {
            row.remove(f.name);
        }
        row
    }

    /// One row by id (with `extra`, a condition on its own columns using
    /// `$2`...), or None.
    pub async fn fetch(
        &self,
        db: &Db,
        id: &str,
        extra: &str,
        params: &[Param],
    ) -> ApiResult<Option<Map<String, Value>>> {
        let sql = format!("SELECT {} FROM {} WHERE id = $1{extra}", self.columns(""), self.table);
        let mut all = vec![Param::Text(id.to_owned())];
        all.extend_from_slice(params);
        let row = bind(sqlx::query(&sql), &all).fetch_optional(&db.pool).await?;
        Ok(row.map(|r| self.row_json(&r)).transpose()?)
    }
}

impl Resource {
    /// Every row matching `condition` (on its own columns, `$1`...), oldest
    /// first.
    pub async fn fetch_all(&self, db: &Db, condition: &str, params: &[Param]) -> ApiResult<Vec<Map<String, Value>>> {
        let sql = format!(
            "SELECT {} FROM {t} WHERE {condition} ORDER BY {t}.created_at, {t}.id",
            self.columns(""),
            t = self.table
        );
        let rows = bind(sqlx::query(&sql), params).fetch_all(&db.pool).await?;
        Ok(rows.iter().map(|r| self.row_json(r)).collect::<Result<Vec<_>, _>>()?)
    }
}

/// A boolean column as a JSON true/false/null (SQLite stores 1/0).
fn bool_json(backend: Backend, column: &str) -> String {
    match backend {
        Backend::Sqlite => {
            format!("json(CASE WHEN {column} IS NULL THEN NULL WHEN {column} THEN 'true' ELSE 'false' END)")
        }
        Backend::Postgres => column.to_owned(),
    }
}

/// A SQL expression holding JSON text, as a JSON value inside
/// `json_expr` (not a string).
pub fn json_value(backend: Backend, expr: &str) -> String {
    match backend {
        Backend::Sqlite => format!("json({expr})"),
        Backend::Postgres => format!("CAST({expr} AS json)"),
    }
}

impl Children {
    /// The list as a JSON value for `json_expr_with`, for rows of
    /// `parent_table` (its `parent` column), oldest child first.
    pub fn json(&self, backend: Backend, parent_table: &str) -> String {
        let (table, column, parent) = (self.table, self.column, self.parent);
        match backend {
            Backend::Sqlite => format!(
                "json((SELECT json_group_array(json_object('id', c.id) ORDER BY c.created_at, c.id) \
                 FROM {table} c WHERE c.{column} = {parent_table}.{parent}))"
            ),
            Backend::Postgres => format!(
                "COALESCE((SELECT json_agg(json_build_object('id', c.id) ORDER BY c.created_at, c.id) \
                 FROM {table} c WHERE c.{column} = {parent_table}.{parent}), CAST('[]' AS json))"
            ),
        }
    }
}

/// A nested list of `{"id": ...}` objects: the ids of `table`'s rows whose
/// `column` is the row's `parent` field (e.g. a load balancer's listeners).
#[derive(Debug)]
pub struct Children {
    pub key: &'static str,
    pub table: &'static str,
    pub column: &'static str,
    pub parent: &'static str,
}

/// Adds each `Children` list to every row, one query per kind of child
/// for the whole page.
pub async fn attach_children(db: &Db, rows: &mut [Map<String, Value>], children: &[Children]) -> ApiResult<()> {
    for child in children {
        let parents: Vec<String> = rows
            .iter()
            .filter_map(|r| r.get(child.parent).and_then(Value::as_str).map(str::to_owned))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut found: std::collections::HashMap<String, Vec<Value>> = std::collections::HashMap::new();
        for chunk in parents.chunks(500) {
            let marks = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {col}, id FROM {table} WHERE {col} IN ({marks}) ORDER BY created_at, id",
                col = child.column,
                table = child.table
            );
            let params: Vec<Param> = chunk.iter().cloned().map(Param::Text).collect();
            for row in bind(sqlx::query(&sql), &params).fetch_all(&db.pool).await? {
                let parent: String = row.try_get(0)?;
                let id: String = row.try_get(1)?;
                found.entry(parent).or_default().push(serde_json::json!({"id": id}));
            }
        }
        for row in rows.iter_mut() {
            let ids =
                row.get(child.parent).and_then(Value::as_str).and_then(|p| found.get(p).cloned()).unwrap_or_default();
            row.insert(child.key.to_owned(), Value::Array(ids));
        }
    }
    Ok(())
}

/// A value bound to a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    Bool(bool),
}

pub fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: &'q [Param],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Text(s) => q.bind(s.as_str()),
            Param::Int(n) => q.bind(*n),
            Param::Bool(b) => q.bind(*b),
        };
    }
    q
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Asc,
    Desc,
}

impl Dir {
    fn parse(s: &str) -> ApiResult<Dir> {
        match s.to_ascii_lowercase().as_str() {
            "asc" => Ok(Dir::Asc),
            "desc" => Ok(Dir::Desc),
            other => Err(ApiError::BadRequest(format!("Supplied sort direction '{other}' is not valid."))),
        }
    }
}

/// The query string of a list request, parsed and checked.
#[derive(Debug)]
pub struct ListQuery {
    pub filters: Vec<(&'static Field, Param)>,
    /// `project_id` of amphorae, which lives on their load balancer.
    pub lb_project: Option<String>,
    /// Tag filters: `tags` (all), `tags-any`, `not-tags`, `not-tags-any`.
    pub tags: Vec<(String, Vec<String>)>,
    pub sort: Vec<(&'static Field, Dir)>,
    pub limit: Option<u64>,
    pub marker: Option<String>,
    pub page_reverse: bool,
    pub fields: Option<Vec<String>>,
    /// The query string's pairs other than marker/page_reverse, for links.
    link_pairs: Vec<(String, String)>,
}

const AUXILIARY: &[&str] = &["limit", "marker", "sort", "sort_key", "sort_dir", "fields", "page_reverse"];
const TAG_FILTERS: &[&str] = &["tags", "tags-any", "not-tags", "not-tags-any"];

/// Settings that shape every list.
#[derive(Debug, Clone)]
pub struct ListSettings {
    pub max_limit: u64,
    pub allow_filtering: bool,
    pub allow_sorting: bool,
    pub allow_pagination: bool,
    pub allow_field_selection: bool,
}

pub fn parse_pairs(query: Option<&str>) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
        .map_err(|_| ApiError::BadRequest("One or more arguments are either duplicate or invalid".into()))
}

/// `fields=a&fields=b` (and `fields=a,b`) from a show request.
pub fn fields_of(pairs: &[(String, String)]) -> Option<Vec<String>> {
    let fields: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "fields")
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned))
        .collect();
    (!fields.is_empty()).then_some(fields)
}

fn filter_value(field: &Field, value: &str) -> ApiResult<Param> {
    let invalid = || ApiError::BadRequest("One or more arguments are either duplicate or invalid".into());
    Ok(match field.kind {
        Kind::Bool => {
            Param::Bool(matches!(value.to_ascii_lowercase().as_str(), "1" | "t" | "true" | "on" | "y" | "yes"))
        }
        Kind::Int => Param::Int(value.parse().map_err(|_| invalid())?),
        Kind::Text | Kind::Time | Kind::Json => Param::Text(value.to_owned()),
    })
}

impl ListQuery {
    pub fn parse(resource: &'static Resource, pairs: Vec<(String, String)>, s: &ListSettings) -> ApiResult<ListQuery> {
        let one = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let mut filters = Vec::new();
        let mut lb_project = None;
        let mut tags = Vec::new();
        if s.allow_filtering {
            for (key, value) in &pairs {
                if AUXILIARY.contains(&key.as_str()) {
                    continue;
                }
                if TAG_FILTERS.contains(&key.as_str()) && resource.field("tags").is_some() {
                    let list = value.split(',').map(str::to_owned).filter(|t| !t.is_empty()).collect();
                    tags.push((key.clone(), list));
                    continue;
                }
                if key == "project_id" && resource.field("project_id").is_none() {
                    lb_project = Some(value.clone());
                    continue;
                }
                let field = resource.field(key).filter(|f| f.filter).ok_or_else(|| {
                    ApiError::BadRequest("One or more arguments are either duplicate or invalid".into())
                })?;
                filters.push((field, filter_value(field, value)?));
            }
        }
        let mut sort = Vec::new();
        if s.allow_sorting {
            let key_of = |k: &str| {
                resource
                    .field(k)
                    .filter(|f| f.kind != Kind::Json)
                    .ok_or_else(|| ApiError::BadRequest(format!("Supplied sort key '{k}' is not valid.")))
            };
            if let Some(spec) = one("sort").filter(|s| !s.is_empty()) {
                for item in spec.split(',') {
                    let comps: Vec<&str> = item.split(':').collect();
                    match comps.as_slice() {
                        [k] => sort.push((key_of(k)?, Dir::Asc)),
                        [k, d] => sort.push((key_of(k)?, Dir::parse(d)?)),
                        _ => return Err(ApiError::BadRequest(format!("Supplied sort key '{item}' is not valid."))),
                    }
                }
            } else if let Some(keys) = one("sort_key").filter(|s| !s.is_empty()) {
                let dirs: Vec<String> =
                    one("sort_dir").map(|d| d.split(',').map(str::to_owned).collect()).unwrap_or_default();
                for (i, k) in keys.split(',').enumerate() {
                    let dir = match dirs.get(i) {
                        Some(d) => Dir::parse(d)?,
                        None => Dir::Asc,
                    };
                    sort.push((key_of(k)?, dir));
                }
            }
            for tie in ["created_at", "id"] {
                if let Some(f) = resource.field(tie)
                    && !sort.iter().any(|(g, _)| std::ptr::eq(*g, f))
                {
                    sort.push((f, Dir::Asc));
                }
            }
        }
        let mut limit = Some(s.max_limit).filter(|m| *m != u64::MAX);
        if let Some(l) = one("limit") {
            if l == "infinite" {
                limit = None;
            } else {
                let n: i64 = l
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("Supplied pagination limit '{l}' is not valid.")))?;
                limit = if n < 1 { None } else { Some((n as u64).min(s.max_limit)) };
            }
        }
        if !s.allow_pagination {
            limit = None;
        }
        let marker = one("marker").filter(|m| !m.is_empty() && s.allow_pagination);
        let page_reverse = one("page_reverse").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let fields = if s.allow_field_selection { fields_of(&pairs) } else { None };
        let link_pairs =
            pairs.into_iter().filter(|(k, _)| k != "marker" && k != "page_reverse" && k != "limit").collect();
        Ok(ListQuery { filters, lb_project, tags, sort, limit, marker, page_reverse, fields, link_pairs })
    }
}

/// A page of rows and its links.
#[derive(Debug)]
pub struct Page {
    pub rows: Vec<Map<String, Value>>,
    pub links: Vec<Value>,
}

/// What the caller scopes the list to before the client's filters.
#[derive(Debug, Default)]
pub struct Scope {
    /// SQL conditions on the resource's own columns, with `$?` placeholders
    /// numbered in order, and their values.
    pub conditions: Vec<(String, Vec<Param>)>,
}

impl Scope {
    pub fn with(mut self, condition: &str, params: Vec<Param>) -> Scope {
        self.conditions.push((condition.to_owned(), params));
        self
    }
}

/// Renumbers `$?` placeholders as `$N` from `params.len() + 1`.
fn place(sql: &str, params: &mut Vec<Param>, values: Vec<Param>) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut values = values.into_iter();
    let mut rest = sql;
    while let Some(i) = rest.find("$?") {
        out.push_str(&rest[..i]);
        params.push(values.next().expect("one value per placeholder"));
        out.push_str(&format!("${}", params.len()));
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

/// How a column is read: sqlx's `Any` driver cannot decode SQLite's
/// BOOLEAN, so booleans are read as integers on both engines.
pub fn select_expr(field: &Field, prefix: &str) -> String {
    match field.kind {
        Kind::Bool => format!("CAST(CAST({prefix}{} AS INTEGER) AS BIGINT)", field.column),
        _ => format!("{prefix}{}", field.column),
    }
}

/// A sort column as compared and ordered. A NOT NULL one is named with
/// its table (PostgreSQL would find an unqualified `id` ambiguous beside a
/// subquery column that yields an `id`).
fn coalesced(table: &str, field: &Field) -> String {
    if field.not_null && field.kind != Kind::Bool {
        return format!("{table}.{}", field.column);
    }
    match field.kind {
        Kind::Int => format!("COALESCE({}, 0)", field.column),
        Kind::Bool => format!("CAST(CAST({} AS INTEGER) AS BIGINT)", field.column),
        _ => format!("COALESCE({}, '')", field.column),
    }
}

/// The SELECT of a page: scope, filters, keyset after the marker, order,
/// limit. `select` is what each row yields.
struct PageQuery {
    sql: String,
    params: Vec<Param>,
    /// The rows come last-first (`page_reverse`) and must be turned.
    reverse: bool,
}

async fn page_query(
    db: &Db,
    resource: &'static Resource,
    scope: Scope,
    q: &ListQuery,
    select: &str,
) -> ApiResult<PageQuery> {
    let mut params = Vec::new();
    let mut wheres = Vec::new();
    for (cond, values) in scope.conditions {
        wheres.push(place(&cond, &mut params, values));
    }
    for (field, value) in &q.filters {
        wheres.push(place(&format!("{} = $?", field.column), &mut params, vec![value.clone()]));
    }
    if let Some(project) = &q.lb_project {
        wheres.push(place(
            "load_balancer_id IN (SELECT id FROM load_balancer WHERE project_id = $?)",
            &mut params,
            vec![Param::Text(project.clone())],
        ));
    }
    for (kind, tags) in &q.tags {
        for_tags(kind, tags, &mut wheres, &mut params);
    }
    // The marker's sort values, read without filters (as upstream).
    let reverse = q.page_reverse && q.marker.is_some();
    if let Some(marker) = &q.marker {
        let cols = q.sort.iter().map(|(f, _)| coalesced(resource.table, f)).collect::<Vec<_>>().join(", ");
        let row = sqlx::query(&format!("SELECT {cols} FROM {} WHERE id = $1", resource.table))
            .bind(marker.as_str())
            .fetch_optional(&db.pool)
            .await?
            .ok_or_else(|| ApiError::BadRequest(format!("Supplied pagination marker '{marker}' is not valid.")))?;
        let mut values = Vec::new();
        for (i, (f, _)) in q.sort.iter().enumerate() {
            values.push(match f.kind {
                Kind::Int => Param::Int(row.try_get::<i64, _>(i)?),
                Kind::Bool => Param::Int(row.try_get::<i64, _>(i)?),
                _ => Param::Text(row.try_get::<String, _>(i)?),
            });
        }
        // (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ...
        let mut ors = Vec::new();
        for i in 0..q.sort.len() {
            let mut ands = Vec::new();
            for (j, value) in values.iter().enumerate().take(i + 1) {
                let (f, dir) = q.sort[j];
                let forward = (dir == Dir::Asc) != reverse;
                let op = if j < i {
                    "="
                } else if forward {
                    ">"
                } else {
                    "<"
                };
                ands.push(place(
                    &format!("{} {op} $?", coalesced(resource.table, f)),
                    &mut params,
                    vec![value.clone()],
                ));
            }
            ors.push(format!("({})", ands.join(" AND ")));
        }
        if !ors.is_empty() {
            wheres.push(format!("({})", ors.join(" OR ")));
        }
    }
    let mut sql = format!("SELECT {select} FROM {}", resource.table);
    if !wheres.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&wheres.join(" AND "));
    }
    if !q.sort.is_empty() {
        let order = q
            .sort
            .iter()
            .map(|(f, d)| {
                let asc = (*d == Dir::Asc) != reverse;
                format!("{} {}", coalesced(resource.table, f), if asc { "ASC" } else { "DESC" })
            })
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(" ORDER BY ");
        sql.push_str(&order);
    }
    if let Some(limit) = q.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Ok(PageQuery { sql, params, reverse })
}

/// Runs the list: scope, filters, keyset after the marker, order, limit.
pub async fn list(
    db: &Db,
    resource: &'static Resource,
    scope: Scope,
    q: &ListQuery,
    base_url: &str,
) -> ApiResult<Page> {
    let page = page_query(db, resource, scope, q, &resource.columns("")).await?;
    let rows = bind(sqlx::query(&page.sql), &page.params).fetch_all(&db.pool).await?;
    let mut out = rows.iter().map(|r| resource.row_json(r)).collect::<Result<Vec<_>, _>>()?;
    if page.reverse {
        out.reverse();
    }
    let ids: Vec<&str> = out.iter().map(|row| row.get("id").and_then(Value::as_str).unwrap_or_default()).collect();
    let links = links(q, &ids, base_url);
    Ok(Page { rows: out, links })
}

/// The list as the engine renders it: each row comes back as the text of
/// its JSON object (`Resource::json_expr`), so a page of a resource that
/// needs no post-processing costs the controller a string per row instead
/// of a decoded value per field. Same rows, order and links as `list`.
pub async fn list_json(
    db: &Db,
    resource: &'static Resource,
    scope: Scope,
    q: &ListQuery,
    base_url: &str,
    extra: &[(&str, String)],
) -> ApiResult<JsonPage> {
    let select = format!("{}, {}.id", resource.json_expr_with(db.backend, q.fields.as_deref(), extra), resource.table);
    let page = page_query(db, resource, scope, q, &select).await?;
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for row in bind(sqlx::query(&page.sql), &page.params).fetch_all(&db.pool).await? {
        rows.push(row.try_get::<String, _>(0)?);
        ids.push(row.try_get::<String, _>(1)?);
    }
    if page.reverse {
        rows.reverse();
        ids.reverse();
    }
    let links = links(q, &ids.iter().map(String::as_str).collect::<Vec<_>>(), base_url);
    Ok(JsonPage { rows, links })
}

/// A page of rows, each the text of a JSON object, and its links.
#[derive(Debug)]
pub struct JsonPage {
    pub rows: Vec<String>,
    pub links: Vec<Value>,
}

impl JsonPage {
    /// `{"<plural>": [rows], "<plural>_links": [links]}`, the keys in the
    /// order serde_json prints a map's.
    pub fn body(&self, plural: &str) -> String {
        let size = self.rows.iter().map(|r| r.len() + 1).sum::<usize>() + 2 * plural.len() + 64;
        let mut out = String::with_capacity(size);
        out.push_str("{\"");
        out.push_str(plural);
        out.push_str("\":[");
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(row);
        }
        out.push_str("],\"");
        out.push_str(plural);
        out.push_str("_links\":");
        out.push_str(&serde_json::to_string(&self.links).unwrap_or_else(|_| "[]".to_owned()));
        out.push('}');
        out
    }
}

fn for_tags(kind: &str, tags: &[String], wheres: &mut Vec<String>, params: &mut Vec<Param>) {
    // Tags are a JSON list in a text column: match the JSON-quoted tag,
    // with LIKE's own wildcards escaped.
    let like = |t: &str| {
        let quoted = serde_json::to_string(t).unwrap_or_default();
        let escaped = quoted.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        Param::Text(format!("%{escaped}%"))
    };
    let conds: Vec<String> = tags.iter().map(|t| place("tags LIKE $? ESCAPE '\\'", params, vec![like(t)])).collect();
    if conds.is_empty() {
        return;
    }
    wheres.push(match kind {
        "tags" => format!("({})", conds.join(" AND ")),
        "tags-any" => format!("({})", conds.join(" OR ")),
        "not-tags" => format!("NOT ({})", conds.join(" AND ")),
        _ => format!("NOT ({})", conds.join(" OR ")),
    });
}

/// `ids`: the page's row ids, in order.
fn links(q: &ListQuery, ids: &[&str], base_url: &str) -> Vec<Value> {
    let mut links = Vec::new();
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else { return links };
    let mut common: Vec<(String, String)> = Vec::new();
    if let Some(limit) = q.limit {
        common.push(("limit".into(), limit.to_string()));
    }
    common.extend(q.link_pairs.iter().cloned());
    let href = |extra: Vec<(&str, String)>| {
        let mut pairs = common.clone();
        pairs.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{base_url}?{qs}")
    };
    if q.marker.is_some() {
        links.push(serde_json::json!({
            "rel": "previous",
            "href": href(vec![("marker", (*first).to_owned()), ("page_reverse", "True".into())]),
        }));
    }
    if q.limit.is_none_or(|l| ids.len() as u64 >= l) {
        links.push(serde_json::json!({"rel": "next", "href": href(vec![("marker", (*last).to_owned())])}));
    }
    links
}

/// Keeps only the asked-for fields (`fields=`); unknown names are ignored,
/// as upstream's WSME does.
pub fn select_fields(mut obj: Map<String, Value>, fields: Option<&[String]>) -> Map<String, Value> {
    if let Some(fields) = fields {
        obj.retain(|k, _| fields.iter().any(|f| f == k));
    }
    obj
}
