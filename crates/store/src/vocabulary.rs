//! The blackboard's vocabulary on the wire: each enum is its snake_case
//! name as a JSON (or YAML) string, and an OpenAPI string enum. Written by
//! hand over `as_str`/`ALL` so the store's enums carry no serde or utoipa
//! derive; the form is the one `#[derive(Serialize, Deserialize, ToSchema)]`
//! with `rename_all = "snake_case"` gave (unit variants, `unknown variant`
//! errors naming the accepted values).
//!
//! It lives in the store only because Rust lets a foreign trait (serde's,
//! utoipa's) be implemented for a type in the type's crate alone. It is
//! compiled only with the `wire` feature, which the main crate turns on for
//! its `wire` module: `cargo build -p moziplus-store` builds the store
//! without it, so no statement of the store can lean on a wire shape.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use crate::model::{
    CommentType, DecisionStatus, EventLevel, ExperienceStatus, FiringReason, MissedPolicy,
    ObservationLevel, Outcome, OverlapPolicy, Priority, ScheduleSource, TaskStatus, Verdict,
};

/// One of the blackboard's string enums.
trait Vocabulary: Copy + PartialEq + 'static {
    /// The type's name, as serde and the OpenAPI document know it.
    const NAME: &'static str;
    /// Every value's name, in declaration order.
    const NAMES: &'static [&'static str];
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

fn serialize<T: Vocabulary, S: Serializer>(v: T, s: S) -> Result<S::Ok, S::Error> {
    let index = T::ALL.iter().position(|x| *x == v).unwrap_or_default();
    s.serialize_unit_variant(T::NAME, index as u32, v.as_str())
}

fn deserialize<'de, T: Vocabulary, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_enum(T::NAME, T::NAMES, EnumVisitor(PhantomData))
}

fn schema<T: Vocabulary>(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
        .enum_values(Some(T::NAMES.iter().copied()))
        .into()
}

/// The variant's name.
struct Name<T>(T);

impl<'de, T: Vocabulary> Deserialize<'de> for Name<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(NameVisitor(PhantomData))
    }
}

struct NameVisitor<T>(PhantomData<T>);

impl<T: Vocabulary> Visitor<'_> for NameVisitor<T> {
    type Value = Name<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("variant identifier")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<T>, E> {
        T::ALL
            .iter()
            .find(|v| v.as_str() == s)
            .map(|v| Name(*v))
            .ok_or_else(|| E::unknown_variant(s, T::NAMES))
    }
}

struct EnumVisitor<T>(PhantomData<T>);

impl<'de, T: Vocabulary> Visitor<'de> for EnumVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "enum {}", T::NAME)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<T, A::Error> {
        let (Name(v), variant) = data.variant::<Name<T>>()?;
        variant.unit_variant()?;
        Ok(v)
    }
}

/// Serialize, Deserialize and ToSchema for each enum, with the description
/// its OpenAPI schema carries.
macro_rules! vocabulary {
    ($($name:ident: $description:literal,)+) => {$(
        impl Vocabulary for $name {
            const NAME: &'static str = stringify!($name);
            const NAMES: &'static [&'static str] = &{
                let mut names = [""; $name::ALL.len()];
                let mut i = 0;
                while i < names.len() {
                    names[i] = $name::ALL[i].as_str();
                    i += 1;
                }
                names
            };
            const ALL: &'static [Self] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize(*self, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize(d)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                schema::<$name>($description)
            }
        }

        impl utoipa::ToSchema for $name {}
    )+};
}

vocabulary! {
    TaskStatus: "Where a task is in its lifecycle.",
    Priority: "Task and request priority; lower number is more urgent.",
    Verdict: "A reviewer's verdict.",
    CommentType: "Kinds of comment.",
    DecisionStatus: "Decision status.",
    ObservationLevel: "Observation level.",
    ExperienceStatus: "Experience status.",
    Outcome: "How an agent run ended.",
    EventLevel: "Event levels: who must look, and how soon.",
    OverlapPolicy: "What a schedule does while its last task is open: skip the slot, queue a task that waits for it, or allow it.",
    MissedPolicy: "What a schedule does about slots missed while no daemon ran: skip them, or fire once.",
    FiringReason: "Why a schedule's slot was recorded: fired on time, as the catch-up, by hand; or skipped for overlap, missed or paused.",
    ScheduleSource: "Where a schedule was defined: by an operator (CLI, API) or in project.yaml.",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_their_snake_case_names_both_ways() {
        for v in Outcome::ALL {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), *v);
        }
        assert_eq!(
            serde_json::to_string(&Outcome::TimedOut).unwrap(),
            "\"timed_out\""
        );
        let yaml: Vec<EventLevel> = serde_yaml_ng::from_str("[urgent, daily]").unwrap();
        assert_eq!(yaml, [EventLevel::Urgent, EventLevel::Daily]);
    }

    #[test]
    fn an_unknown_value_is_refused_naming_the_accepted_ones() {
        let err = serde_json::from_str::<Priority>("\"asap\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `asap`, expected one of `urgent`, `high`, `normal`, `low` at line 1 column 6"
        );
        let err = serde_yaml_ng::from_str::<Vec<EventLevel>>("[loud]").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variant `loud`, expected one of `urgent`, `attention`, `daily`, `optional`"),
            "{err}"
        );
    }
}
