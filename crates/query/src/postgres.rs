//! The PostgreSQL dialect over the lake's SQL session: the `pg_catalog` that BI tools and
//! drivers discover tables through, the catalog functions they call, and the rewrites that let
//! DataFusion plan the catalog queries they send. The wire protocol (`serve --pg`) is the
//! server's; what a statement means is decided here, with the rest of the SQL layer.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::logical_expr::{LogicalPlan, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

/// The PostgreSQL version the server says it is: clients (SQLAlchemy, and so Superset) parse
/// it from `version()` and `server_version`, and pick their SQL by it.
pub const PG_VERSION: &str = "16.6";

/// Installs `pg_catalog` and the catalog functions in the session.
pub fn install(ctx: &SessionContext) -> datafusion::error::Result<()> {
    install_all(ctx)?;
    crate::functions::restrict(ctx, PG_FUNCTIONS);
    Ok(())
}

/// [`install`] before the functions are held to the allow-list.
pub(crate) fn install_all(ctx: &SessionContext) -> datafusion::error::Result<()> {
    setup_pg_catalog(ctx, "datafusion", EmptyContextProvider).map_err(|e| *e)?;
    settings::install(ctx)?;
    ctx.register_udf(version_udf());
    ctx.register_udf(to_regtype_udf());
    ctx.register_udf(constant_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        datafusion::common::ScalarValue::Utf8(None),
    ));
    ctx.register_udf(constant_udf(
        "pg_collation_is_visible",
        vec![DataType::Int32],
        datafusion::common::ScalarValue::Boolean(Some(true)),
    ));
    // pgJDBC's getIndexInfo asks for each index column's definition; there are no indexes.
    ctx.register_udf(ScalarUDF::new_from_impl(AnyArgs::new(
        "pg_get_indexdef",
        datafusion::common::ScalarValue::Utf8(None),
    )));
    // pgJDBC's getFunctions asks for each function's result type; the catalog does not say.
    ctx.register_udf(ScalarUDF::new_from_impl(AnyArgs::new(
        "pg_get_function_result",
        datafusion::common::ScalarValue::Utf8(None),
    )));
    // pgJDBC's getPrimaryKeys and getIndexInfo expand each index's key columns; the lake has
    // no keys or indexes, so no row reaches it, but the query must plan.
    ctx.register_udf(ScalarUDF::new_from_impl(AnyArgs::new(
        "_pg_expandarray",
        datafusion::common::ScalarValue::Struct(Arc::new(
            datafusion::arrow::array::StructArray::new_null(
                Fields::from(vec![
                    Field::new("x", DataType::Int32, true),
                    Field::new("n", DataType::Int32, true),
                ]),
                1,
            ),
        )),
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject {
        signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Stable),
    }));
    Ok(())
}

/// The functions the PostgreSQL dialect adds, reviewed like the built-ins
/// ([`crate::functions`]): catalog and session introspection that answers from the catalog's
/// small tables or with a constant, and formatting functions bounded by their arguments.
pub(crate) const PG_FUNCTIONS: &[&str] = &[
    // Constants, or answers from the catalog's own small tables.
    "_pg_expandarray",
    "current_database",
    "current_schema",
    "current_schemas",
    "format_type",
    "has_any_column_privilege",
    "has_database_privilege",
    "has_schema_privilege",
    "has_table_privilege",
    "pg_backend_pid",
    "pg_collation_is_visible",
    "pg_encoding_to_char",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_function_result",
    "pg_get_indexdef",
    "pg_get_keywords",
    "pg_get_partkeydef",
    "pg_get_serial_sequence",
    "pg_get_statisticsobjdef_columns",
    "pg_get_userbyid",
    "pg_partition_ancestors",
    "pg_relation_is_publishable",
    "pg_relation_size",
    "pg_stat_get_numscans",
    "pg_table_is_visible",
    "pg_total_relation_size",
    "session_user",
    "to_regtype",
    // Bounded by their arguments: an array's bounds, an identifier split or quoted, an object
    // of the pairs given.
    "array_lower",
    "array_upper",
    "json_build_object",
    "parse_ident",
    "quote_ident",
];

/// What a statement is, as far as the wire protocol is concerned.
#[derive(Debug, PartialEq)]
pub enum Kind {
    /// Planned and run read-only.
    Read,
    /// A session setting, `SHOW`, or a transaction statement: answered by the hooks.
    Session,
    /// `DISCARD ALL` (connection pools and Power BI send it between uses).
    Discard,
    /// `DEALLOCATE`: prepared statements live in the protocol's store.
    Deallocate,
    /// `RESET name` or `RESET ALL`.
    Reset,
    /// `SAVEPOINT`, `RELEASE SAVEPOINT`: nothing to undo in a read-only session.
    Savepoint(&'static str),
}

/// The statement's leading keywords, for messages: `INSERT`, `CREATE TABLE`, `COPY`.
pub fn command_of(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let n = match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("CREATE" | "DROP" | "ALTER" | "TRUNCATE") => {
            if words.get(1).map(|w| w.eq_ignore_ascii_case("EXTERNAL")) == Some(true) {
                3
            } else {
                2
            }
        }
        _ => 1,
    };
    words[..n.min(words.len())].join(" ").to_ascii_uppercase()
}

/// A statement this server does not run, with PostgreSQL's SQLSTATE for why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn user_error(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Sorts a statement into what the wire protocol does with it; refuses what it must not run,
/// with PostgreSQL's code for it.
pub fn classify(statement: &Statement) -> Result<Kind, Refusal> {
    match statement {
        Statement::Query(_) | Statement::Explain { .. } => Ok(Kind::Read),
        Statement::Set(set) => {
            let names: Vec<String> = match set {
                Set::SingleAssignment { variable, .. } => vec![variable.to_string()],
                Set::MultipleAssignments { assignments } => {
                    assignments.iter().map(|a| a.name.to_string()).collect()
                }
                Set::ParenthesizedAssignments { variables, .. } => {
                    variables.iter().map(|v| v.to_string()).collect()
                }
                _ => Vec::new(),
            };
            if let Some(n) = names.iter().find(|n| {
                n.to_ascii_lowercase()
                    .replace('"', "")
                    .starts_with("datafusion.")
            }) {
                return Err(user_error(
                    "42501",
                    format!(
                        "permission denied to set parameter \"{n}\": the engine's settings are the server's (cryptolake.toml [query]), not a client's"
                    ),
                ));
            }
            Ok(Kind::Session)
        }
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(Kind::Session),
        Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowViews { .. } => Ok(Kind::Read),
        Statement::Discard { .. } => Ok(Kind::Discard),
        Statement::Deallocate { .. } => Ok(Kind::Deallocate),
        Statement::Reset(_) => Ok(Kind::Reset),
        Statement::Savepoint { .. } => Ok(Kind::Savepoint("SAVEPOINT")),
        Statement::ReleaseSavepoint { .. } => Ok(Kind::Savepoint("RELEASE")),
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            Err(user_error(
                "0A000",
                "cursors are not supported: run the query itself, with a LIMIT if it is large",
            ))
        }
        other => Err(user_error(
            "25006",
            format!(
                "cannot execute {} in a read-only transaction: this server only reads the lake; tables change through ingest, silver and gold",
                command_of(other)
            ),
        )),
    }
}

/// Every rewrite a statement gets before it is planned.
pub fn rewrite(statement: &mut Statement) {
    null_correlated_case_subqueries(statement);
    aggregate_correlated_scalar_subqueries(statement);
    null_relacl(statement);
    catalog_arrays_and_procs(statement);
}

/// A subquery over `pg_catalog` tables alone that refers to a row of the query around it.
fn correlated(query: &datafusion::sql::sqlparser::ast::Query) -> bool {
    use datafusion::sql::sqlparser::ast::{Expr, SetExpr, TableFactor, visit_expressions};
    use std::collections::HashSet;
    use std::ops::ControlFlow;

    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let catalog_only = select.from.iter().all(|from| {
        std::iter::once(&from.relation)
            .chain(from.joins.iter().map(|j| &j.relation))
            .all(|f| match f {
                TableFactor::Table { name, .. } => {
                    name.0.iter().any(|p| {
                        p.to_string()
                            .trim_matches('"')
                            .eq_ignore_ascii_case("pg_catalog")
                    }) || name.0.last().is_some_and(|p| {
                        p.to_string()
                            .trim_matches('"')
                            .to_ascii_lowercase()
                            .starts_with("pg_")
                    })
                }
                _ => false,
            })
    });
    if select.from.is_empty() || !catalog_only {
        return false;
    }
    let mut names: HashSet<String> = HashSet::new();
    for from in &select.from {
        for factor in std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
        {
            if let TableFactor::Table { name, alias, .. } = factor {
                if let Some(a) = alias {
                    names.insert(a.name.value.to_ascii_lowercase());
                }
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
                    .collect();
                for i in 0..parts.len() {
                    names.insert(parts[i..].join("."));
                }
            }
        }
    }
    let mut outer = false;
    let _ = visit_expressions(query, |e| {
        if let Expr::CompoundIdentifier(idents) = e
            && idents.len() >= 2
        {
            let qualifier = idents[..idents.len() - 1]
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            outer |= !names.contains(&qualifier);
        }
        ControlFlow::<()>::Continue(())
    });
    outer
}

/// Replaces each correlated subquery over `pg_catalog` alone inside a `CASE` with NULL.
/// DataFusion cannot run a subquery that refers to the outer row from within a `CASE`;
/// catalog queries put them there for column defaults, identity sequences and collations
/// (SQLAlchemy's column reflection does), none of which the lake's tables have, so NULL is
/// their answer. A subquery that reads a lake table is left alone: its error is reported,
/// never turned into NULLs.
fn null_correlated_case_subqueries(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
    use std::ops::ControlFlow;

    fn null_subqueries(e: &mut Expr) {
        let _ = visit_expressions_mut(e, |inner| {
            if let Expr::Subquery(q) = inner
                && correlated(q)
            {
                *inner = Expr::Value(Value::Null.with_empty_span());
            }
            ControlFlow::<()>::Continue(())
        });
    }

    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Case {
            conditions,
            else_result,
            ..
        } = e
        {
            for when in conditions {
                null_subqueries(&mut when.condition);
                null_subqueries(&mut when.result);
            }
            if let Some(e) = else_result {
                null_subqueries(e);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `LIKE … ESCAPE 'c'` for any `c`, as PostgreSQL allows (SQLAlchemy writes `ESCAPE '/'`):
/// DataFusion's LIKE knows only the backslash, so the pattern is rewritten to backslash escapes
/// when it is evaluated (it may be a parameter), by [`like_escape_udf`].
pub fn backslash_escapes(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::expr::Like;
    use datafusion::prelude::{Expr, lit};
    let udf = Arc::new(like_escape_udf());
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::Like(like) if like.escape_char.is_some_and(|c| c != '\\') => {
                    let escape = like.escape_char.expect("checked").to_string();
                    let text = Expr::Cast(datafusion::logical_expr::Cast::new(
                        like.pattern,
                        DataType::Utf8,
                    ));
                    let pattern = udf.call(vec![text, lit(escape)]);
                    Ok(Transformed::yes(Expr::Like(Like {
                        pattern: Box::new(pattern),
                        escape_char: Some('\\'),
                        ..like
                    })))
                }
                other => Ok(Transformed::no(other)),
            })
        })
    })
    .map(|t| t.data)
}

/// The LIKE pattern escaped with `escape` rewritten to backslash escapes.
fn like_escape_udf() -> ScalarUDF {
    use datafusion::arrow::array::{Array, StringArray, StringBuilder};
    use datafusion::logical_expr::ColumnarValue;
    create_udf(
        "cryptolake_like_escape",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = |i: usize| {
                arrays[i]
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Execution(
                            "a LIKE pattern must be text".into(),
                        )
                    })
            };
            let (patterns, escapes) = (text(0)?, text(1)?);
            let mut out = StringBuilder::with_capacity(patterns.len(), patterns.value_data().len());
            for i in 0..patterns.len() {
                if patterns.is_null(i) {
                    out.append_null();
                    continue;
                }
                let escape = escapes.value(i).chars().next();
                let mut rewritten = String::with_capacity(patterns.value(i).len());
                let mut chars = patterns.value(i).chars();
                while let Some(c) = chars.next() {
                    if Some(c) == escape {
                        rewritten.push('\\');
                        if let Some(next) = chars.next() {
                            rewritten.push(next);
                        }
                    } else if c == '\\' {
                        rewritten.push_str("\\\\");
                    } else {
                        rewritten.push(c);
                    }
                }
                out.append_value(rewritten);
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

/// `version()` as PostgreSQL's, which clients parse for the version number.
fn version_udf() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {PG_VERSION} (cryptolake {}, Apache DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(text.clone())),
            ))
        }),
    )
}

/// `to_regtype(name)`: the OID of a built-in type by name, else NULL, as drivers ask before
/// they register an extension's type (psycopg and SQLAlchemy ask for `hstore`, which is not
/// here).
fn to_regtype_udf() -> ScalarUDF {
    use datafusion::arrow::array::{Array, Int32Builder, StringArray};
    const TYPES: [(&str, i32); 16] = [
        ("bool", 16),
        ("boolean", 16),
        ("bytea", 17),
        ("int8", 20),
        ("bigint", 20),
        ("int2", 21),
        ("int4", 23),
        ("integer", 23),
        ("text", 25),
        ("float4", 700),
        ("float8", 701),
        ("double precision", 701),
        ("varchar", 1043),
        ("date", 1082),
        ("timestamp", 1114),
        ("timestamptz", 1184),
    ];
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args| {
            let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0]
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Execution("to_regtype takes text".into())
                })?;
            let mut out = Int32Builder::with_capacity(names.len());
            for i in 0..names.len() {
                let oid = (!names.is_null(i))
                    .then(|| names.value(i).trim().to_ascii_lowercase())
                    .and_then(|n| {
                        let n = n.trim_start_matches("pg_catalog.").to_string();
                        TYPES.iter().find(|(t, _)| *t == n).map(|(_, o)| *o)
                    });
                out.append_option(oid);
            }
            Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
                out.finish(),
            )))
        }),
    )
}

/// A catalog function whose answer is the same for every table of the lake: there are no
/// sequences (`pg_get_serial_sequence` is NULL) and every collation is visible.
fn constant_udf(
    name: &str,
    args: Vec<DataType>,
    value: datafusion::common::ScalarValue,
) -> ScalarUDF {
    create_udf(
        name,
        args,
        value.data_type(),
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                value.clone(),
            ))
        }),
    )
}

/// `json_build_object(key, value, …)` as JSON text, for catalog queries that ask for it
/// (SQLAlchemy's column reflection, over identity columns the lake does not have).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::StringBuilder;
        use datafusion::common::ScalarValue;
        let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?.to_string();
                let value = match pair.get(1) {
                    None => serde_json::Value::Null,
                    Some(a) => match ScalarValue::try_from_array(a, row)? {
                        v if v.is_null() => serde_json::Value::Null,
                        ScalarValue::Boolean(Some(b)) => b.into(),
                        ScalarValue::Int64(Some(n)) => n.into(),
                        ScalarValue::Int32(Some(n)) => n.into(),
                        ScalarValue::Float64(Some(f)) => f.into(),
                        other => other.to_string().into(),
                    },
                };
                object.insert(key, value);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            out.finish(),
        )))
    }
}

/// Wraps the one expression of each correlated scalar subquery over `pg_catalog` in
/// `first_value`, outside a `CASE`. DataFusion runs a correlated scalar subquery only when it
/// is aggregated; the catalog queries drivers send select one column of the row whose key the
/// outer row names (pgJDBC's getTypeInfo: `(SELECT c.relkind = 'c' FROM pg_class c WHERE
/// c.oid = t.typrelid)`), so at most one row, and `first_value` of it is the same answer.
fn aggregate_correlated_scalar_subqueries(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        Ident, ObjectName, SelectItem, SetExpr, visit_expressions_mut,
    };
    use std::ops::ControlFlow;
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Subquery(q) = e
            && correlated(q)
            && let SetExpr::Select(select) = q.body.as_mut()
            && select.group_by
                == datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(vec![], vec![])
            && select.projection.len() == 1
            && let SelectItem::UnnamedExpr(inner) | SelectItem::ExprWithAlias { expr: inner, .. } =
                &mut select.projection[0]
            && !matches!(inner, Expr::Function(_))
        {
            let arg = std::mem::replace(
                inner,
                Expr::value(datafusion::sql::sqlparser::ast::Value::Null),
            );
            *inner = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new("first_value")]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `relacl`, a table's access privileges, as NULL: the catalog has no such column, and NULL
/// is PostgreSQL's "the owner's default privileges" (pgJDBC's getTablePrivileges reads it so).
fn null_relacl(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{Expr, visit_expressions_mut};
    use std::ops::ControlFlow;
    let _ = visit_expressions_mut(statement, |e| {
        let named = match e {
            Expr::Identifier(i) => i.value.eq_ignore_ascii_case("relacl"),
            Expr::CompoundIdentifier(ids) => ids
                .last()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("relacl")),
            _ => false,
        };
        if named {
            *e = Expr::Cast {
                kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                expr: Box::new(Expr::value(datafusion::sql::sqlparser::ast::Value::Null)),
                data_type: datafusion::sql::sqlparser::ast::DataType::Text,
                array: false,
                format: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A catalog function of any arguments with one answer for every row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AnyArgs {
    name: &'static str,
    value: datafusion::common::ScalarValue,
    signature: datafusion::logical_expr::Signature,
}

impl AnyArgs {
    fn new(name: &'static str, value: datafusion::common::ScalarValue) -> AnyArgs {
        AnyArgs {
            name,
            value,
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Stable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for AnyArgs {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(
        &self,
        _: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            self.value.clone(),
        ))
    }
}

/// `pg_catalog.pg_settings` with the settings drivers read: the catalog's own view holds only
/// `standard_conforming_strings`, and pgJDBC's getImportedKeys and getExportedKeys stop when
/// `max_index_keys` is missing.
mod settings {
    use std::sync::Arc;

    use async_trait::async_trait;
    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
    use datafusion::prelude::SessionContext;

    /// (name, setting) as PostgreSQL 16 reports them for a read-only server.
    const SETTINGS: [(&str, &str); 9] = [
        ("standard_conforming_strings", "on"),
        ("max_index_keys", "32"),
        ("max_identifier_length", "63"),
        ("server_version", super::PG_VERSION),
        ("server_version_num", "160006"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("default_transaction_read_only", "on"),
        ("integer_datetimes", "on"),
    ];

    #[derive(Debug)]
    struct WithSettings {
        inner: Arc<dyn SchemaProvider>,
        settings: Arc<dyn TableProvider>,
    }

    #[async_trait]
    impl SchemaProvider for WithSettings {
        fn table_names(&self) -> Vec<String> {
            self.inner.table_names()
        }

        async fn table(
            &self,
            name: &str,
        ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
            if name == "pg_settings" {
                return Ok(Some(self.settings.clone()));
            }
            self.inner.table(name).await
        }

        fn table_exist(&self, name: &str) -> bool {
            name == "pg_settings" || self.inner.table_exist(name)
        }
    }

    pub(super) fn install(ctx: &SessionContext) -> datafusion::error::Result<()> {
        let catalog = ctx.catalog("datafusion").ok_or_else(|| {
            datafusion::error::DataFusionError::Configuration("no catalog datafusion".into())
        })?;
        let Some(inner) = catalog.schema("pg_catalog") else {
            return Ok(());
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(SETTINGS.iter().map(|s| s.0))),
                Arc::new(StringArray::from_iter_values(SETTINGS.iter().map(|s| s.1))),
            ],
        )?;
        let settings = Arc::new(MemTable::try_new(schema, vec![vec![batch]])?);
        catalog.register_schema("pg_catalog", Arc::new(WithSettings { inner, settings }))?;
        Ok(())
    }
}

/// The catalog columns PostgreSQL keeps as arrays (of column numbers, operator classes) that
/// this catalog keeps as text, and `i_indoption`, pgJDBC's name for `indoption` in
/// getIndexInfo's subquery.
const TEXT_ARRAYS: [&str; 7] = [
    "conkey",
    "confkey",
    "indkey",
    "indoption",
    "indclass",
    "indcollation",
    "i_indoption",
];

/// The catalog columns of type `regproc` (a function, compared by name), kept as text here.
const PROC_COLUMNS: [&str; 7] = [
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
];

fn column_name(e: &datafusion::sql::sqlparser::ast::Expr) -> Option<String> {
    use datafusion::sql::sqlparser::ast::Expr;
    match e {
        Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(ids) => ids.last().map(|i| i.value.to_ascii_lowercase()),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

/// A function name as `regproc` (a cast, or the lookup of its oid in `pg_proc` the
/// compatibility parser makes of one) as the bare name the catalog keeps.
fn bare_proc_name(e: &mut datafusion::sql::sqlparser::ast::Expr) {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions};
    use std::ops::ControlFlow;
    let name = match e {
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(n) => Some(n.clone()),
                _ => None,
            },
            _ => None,
        },
        Expr::Subquery(q) if q.to_string().contains("pg_proc") => {
            let mut found = None;
            let _ = visit_expressions(q, |inner| {
                if let Expr::Value(v) = inner
                    && let Value::SingleQuotedString(n) = &v.value
                {
                    found = Some(n.clone());
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            found
        }
        _ => None,
    };
    if let Some(name) = name {
        let bare = name.rsplit('.').next().unwrap_or(&name).to_string();
        *e = Expr::value(Value::SingleQuotedString(bare));
    }
}

/// Three shapes of PostgreSQL that drivers' catalog queries use (pgJDBC's getPrimaryKeys,
/// getImportedKeys, getIndexInfo and type lookups):
/// - a field of a composite value, `(f(x)).n`: DataFusion reads a struct's field by name only
///   when the name is a string, so the name becomes one;
/// - an element of a catalog array kept as text, `con.conkey[pos.n]`: NULL (the lake has no
///   constraints or indexes, so no row has one);
/// - a function name as `regproc`, `typinput = 'pg_catalog.array_in'::regproc`: compared as the
///   name the catalog keeps, `'array_in'`.
fn catalog_arrays_and_procs(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{
        AccessExpr, BinaryOperator, Expr, Subscript, Value, visit_expressions_mut,
    };
    use std::ops::ControlFlow;
    let null_int = || Expr::Cast {
        kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
        expr: Box::new(Expr::value(Value::Null)),
        data_type: datafusion::sql::sqlparser::ast::DataType::Int(None),
        array: false,
        format: None,
    };
    let _ = visit_expressions_mut(statement, |e| {
        match e {
            Expr::CompoundFieldAccess { root, access_chain } => {
                // `con.conkey[pos.n]` arrives as `con` with `.conkey` and `[pos.n]`.
                let subscript = access_chain
                    .iter()
                    .position(|a| matches!(a, AccessExpr::Subscript(Subscript::Index { .. })));
                let array = match subscript {
                    Some(0) => column_name(root),
                    Some(i) => match &access_chain[i - 1] {
                        AccessExpr::Dot(Expr::Identifier(f)) => Some(f.value.to_ascii_lowercase()),
                        _ => None,
                    },
                    None => None,
                };
                if array.is_some_and(|n| TEXT_ARRAYS.contains(&n.as_str())) {
                    *e = null_int();
                    return ControlFlow::<()>::Continue(());
                }
                // A field of a value (`(f(x)).n`), not a qualified column name.
                if !matches!(
                    root.as_ref(),
                    Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                ) {
                    for access in access_chain.iter_mut() {
                        if let AccessExpr::Dot(Expr::Identifier(field)) = access {
                            let name = field.value.clone();
                            *access = AccessExpr::Dot(Expr::value(Value::SingleQuotedString(name)));
                        }
                    }
                }
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq | BinaryOperator::NotEq,
                right,
            } => {
                let proc_column =
                    |c: &Expr| column_name(c).is_some_and(|n| PROC_COLUMNS.contains(&n.as_str()));
                if proc_column(left) {
                    bare_proc_name(right);
                }
                if proc_column(right) {
                    bare_proc_name(left);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn rewritten(sql: &str) -> String {
        let mut statements = PostgresCompatibilityParser::new().parse(sql).unwrap();
        rewrite(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn a_function_named_as_regproc_is_compared_by_its_bare_name() {
        let sql = rewritten(
            "SELECT typinput='pg_catalog.array_in'::regproc as is_array FROM pg_catalog.pg_type WHERE pg_type.oid = $1",
        );
        assert!(sql.contains("typinput = 'array_in'"), "{sql}");
        assert!(!sql.contains("pg_proc"), "{sql}");
    }

    #[test]
    fn catalog_arrays_are_null_and_composite_fields_are_named() {
        let sql = rewritten(
            "SELECT con.conkey[pos.n], i.indkey[1], (information_schema._pg_expandarray(i.indkey)).n, pkn.nspname \
             FROM pg_catalog.pg_constraint con, pg_catalog.pg_index i, pg_catalog.pg_namespace pkn, generate_series(1, 32) pos(n)",
        );
        assert!(!sql.contains("conkey["), "{sql}");
        assert!(!sql.contains("indkey[1]"), "{sql}");
        assert_eq!(sql.matches("CAST(NULL AS INT)").count(), 2, "{sql}");
        assert!(sql.contains("(_pg_expandarray(i.indkey)).'n'"), "{sql}");
        assert!(sql.contains("pkn.nspname"), "qualified names stay: {sql}");
    }

    #[test]
    fn correlated_scalar_subqueries_over_the_catalog_are_aggregated_and_relacl_is_null() {
        let sql = rewritten(
            "SELECT t.typname, c.relacl FROM pg_catalog.pg_type t, pg_catalog.pg_class c \
             WHERE (t.typrelid = 0 OR (SELECT c2.relkind = 'c' FROM pg_catalog.pg_class c2 WHERE c2.oid = t.typrelid))",
        );
        assert!(sql.contains("first_value(c2.relkind = 'c')"), "{sql}");
        assert!(sql.contains("CAST(NULL AS TEXT)"), "{sql}");
        // A subquery over a lake table is never changed.
        let lake = rewritten(
            "SELECT (SELECT s.close FROM crypto_analytics.ohlcv_1h s WHERE s.symbol = g.symbol) FROM crypto_gold.ohlcv_1d g",
        );
        assert!(!lake.contains("first_value"), "{lake}");
    }

    #[test]
    fn statements_are_sorted_and_writes_refused_with_their_sqlstate() {
        let kind = |sql: &str| {
            let statements = PostgresCompatibilityParser::new().parse(sql).unwrap();
            classify(&statements[0])
        };
        assert_eq!(kind("SELECT 1"), Ok(Kind::Read));
        assert_eq!(kind("SET application_name = 'x'"), Ok(Kind::Session));
        assert_eq!(kind("DISCARD ALL"), Ok(Kind::Discard));
        let refused = kind("DROP TABLE crypto_analytics.ohlcv_1h").unwrap_err();
        assert_eq!(refused.code, "25006");
        assert!(
            refused.message.contains("DROP TABLE"),
            "{}",
            refused.message
        );
        assert_eq!(
            kind("SET datafusion.execution.batch_size = 1")
                .unwrap_err()
                .code,
            "42501"
        );
        assert_eq!(
            kind("DECLARE c CURSOR FOR SELECT 1").unwrap_err().code,
            "0A000"
        );
    }
}
