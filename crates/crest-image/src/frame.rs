//! Records that can grow.
//!
//! postcard alone writes a record's fields one after the other with nothing around them, so a
//! reader must know exactly the fields the writer wrote. Here every record (struct, or enum whose
//! variants carry fields) is written as a byte string, a varint length and then its fields as
//! postcard encodes them (an enum: the variant's index, then the variant's fields). A reader
//! decodes the fields it knows, in order:
//!
//! * when the record ends before a field, that field and the ones after it take their default
//!   (fields added after the first version of a record are `#[serde(default)]`): a newer reader
//!   reads an older image;
//! * when bytes are left after the last field it knows, they are skipped: fields added by a
//!   newer writer are ignored by an older reader.
//!
//! A record type opts in with `#[serde(remote = "Self")]` on its derive (which turns the derived
//! code into inherent functions) and [`framed!`], which wraps those functions. Formats that
//! describe themselves (`cr_info --json`) see the plain derived encoding.
use std::cell::Cell;
use std::marker::PhantomData;
use std::rc::Rc;

use postcard::de_flavors::Flavor;
use serde::de::{self, DeserializeSeed, EnumAccess, IntoDeserializer, SeqAccess, VariantAccess, Visitor};
use serde::forward_to_deserialize_any;

/// A postcard source over the bytes of one record that lets the field reader see how many
/// bytes are left.
pub(crate) struct Tracked<'de> {
    bytes: &'de [u8],
    pos: Rc<Cell<usize>>,
}

impl<'de> Flavor<'de> for Tracked<'de> {
    type Remainder = usize;
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        let p = self.pos.get();
        let b = *self.bytes.get(p).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.pos.set(p + 1);
        Ok(b)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len() - self.pos.get())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        let p = self.pos.get();
        let end = p.checked_add(ct).filter(|&e| e <= self.bytes.len()).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.pos.set(end);
        Ok(&self.bytes[p..end])
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.bytes.len() - self.pos.get())
    }
}

/// The deserializer a record's derived code is given: a struct's fields, or an enum's index and
/// the variant's fields, read up to the end of the record and no further.
pub struct Fields<'a, 'de> {
    de: &'a mut postcard::Deserializer<'de, Tracked<'de>>,
    pos: Rc<Cell<usize>>,
    len: usize,
}

impl Fields<'_, '_> {
    fn at_end(&self) -> bool {
        self.pos.get() >= self.len
    }
}

/// The fields of a struct or struct variant, as many as the record holds.
struct Seq<'a, 'b, 'de> {
    f: &'b mut Fields<'a, 'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_, '_, 'de> {
    type Error = postcard::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> postcard::Result<Option<T::Value>> {
        if self.left == 0 || self.f.at_end() {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.f.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::Deserializer<'de> for Fields<'_, 'de> {
    type Error = postcard::Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> postcard::Result<V::Value> {
        Err(postcard::Error::WontImplement)
    }

    fn deserialize_struct<V: Visitor<'de>>(mut self, _name: &'static str, fields: &'static [&'static str], visitor: V) -> postcard::Result<V::Value> {
        visitor.visit_seq(Seq { f: &mut self, left: fields.len() })
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _name: &'static str, _variants: &'static [&'static str], visitor: V) -> postcard::Result<V::Value> {
        visitor.visit_enum(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

impl<'a, 'de> EnumAccess<'de> for Fields<'a, 'de> {
    type Error = postcard::Error;
    type Variant = Fields<'a, 'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> postcard::Result<(V::Value, Self::Variant)> {
        // postcard writes a variant's index as a varint u32, as it writes any u32.
        let index: u32 = de::Deserialize::deserialize(&mut *self.de)?;
        let v = seed.deserialize(index.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Fields<'_, 'de> {
    type Error = postcard::Error;

    fn unit_variant(self) -> postcard::Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> postcard::Result<T::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> postcard::Result<V::Value> {
        de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(mut self, fields: &'static [&'static str], visitor: V) -> postcard::Result<V::Value> {
        visitor.visit_seq(Seq { f: &mut self, left: fields.len() })
    }
}

/// A record type whose fields are read by [`Fields`] (implemented by [`framed!`]).
pub trait Record: Sized {
    /// Decodes the record's fields from `f` with the derived code.
    fn from_fields(f: Fields<'_, '_>) -> postcard::Result<Self>;
}

/// Decodes a record of type `T` from the bytes of its frame.
pub fn decode_record<T: Record>(bytes: &[u8]) -> postcard::Result<T> {
    let pos = Rc::new(Cell::new(0));
    let mut de = postcard::Deserializer::from_flavor(Tracked { bytes, pos: pos.clone() });
    T::from_fields(Fields { de: &mut de, pos, len: bytes.len() })
}

struct FrameVisitor<T>(PhantomData<T>);

impl<T: Record> Visitor<'_> for FrameVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a record")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<T, E> {
        decode_record(v).map_err(E::custom)
    }
}

/// Reads one framed record from `d`.
pub fn deserialize<'de, D: de::Deserializer<'de>, T: Record>(d: D) -> Result<T, D::Error> {
    d.deserialize_bytes(FrameVisitor(PhantomData))
}

/// The encoder a record's derived code writes its fields with.
pub type FieldWriter = postcard::Serializer<postcard::ser_flavors::StdVec>;

/// A fresh [`FieldWriter`].
pub fn field_writer() -> FieldWriter {
    postcard::Serializer { output: postcard::ser_flavors::StdVec::new() }
}

/// Writes a record as a frame into `s`: the bytes its fields were written as into `w`.
pub fn serialize<S: serde::Serializer>(w: Result<FieldWriter, postcard::Error>, s: S) -> Result<S::Ok, S::Error> {
    let bytes = w.and_then(|w| postcard::ser_flavors::Flavor::finalize(w.output)).map_err(serde::ser::Error::custom)?;
    s.serialize_bytes(&bytes)
}

/// Makes the listed types (each deriving `Serialize, Deserialize` with `#[serde(remote =
/// "Self")]`) framed records in postcard, and plain derived ones in self-describing formats.
macro_rules! framed {
    ($($t:ty),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    return <$t>::serialize(self, s);
                }
                let mut w = $crate::frame::field_writer();
                let r = <$t>::serialize(self, &mut w).map(|()| w);
                $crate::frame::serialize(r, s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    return <$t>::deserialize(d);
                }
                $crate::frame::deserialize(d)
            }
        }
        impl $crate::frame::Record for $t {
            fn from_fields(f: $crate::frame::Fields<'_, '_>) -> postcard::Result<Self> {
                <$t>::deserialize(f)
            }
        }
    )*};
}
pub(crate) use framed;

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    /// A record as a first version wrote it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    struct Old {
        a: u32,
        s: String,
        kind: OldKind,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    enum OldKind {
        Unit,
        Pair { x: u8 },
    }

    /// The same record after a field was added to it and to one of its variants.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    struct New {
        a: u32,
        s: String,
        kind: NewKind,
        #[serde(default)]
        added: Vec<u64>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    enum NewKind {
        Unit,
        Pair {
            x: u8,
            #[serde(default)]
            y: Option<u16>,
        },
    }

    framed!(Old, OldKind, New, NewKind);

    #[test]
    fn a_newer_reader_defaults_fields_an_older_writer_did_not_write() {
        let old = Old { a: 7, s: "x".into(), kind: OldKind::Pair { x: 3 } };
        let bytes = postcard::to_stdvec(&vec![old.clone(), old]).unwrap();
        let new: Vec<New> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(new, vec![New { a: 7, s: "x".into(), kind: NewKind::Pair { x: 3, y: None }, added: vec![] }; 2]);
    }

    #[test]
    fn an_older_reader_skips_fields_a_newer_writer_added() {
        let new = New { a: 9, s: "yz".into(), kind: NewKind::Pair { x: 1, y: Some(500) }, added: vec![1, 2, 3] };
        let bytes = postcard::to_stdvec(&(new.clone(), 77u8, new)).unwrap();
        let (a, between, b): (Old, u8, Old) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a, Old { a: 9, s: "yz".into(), kind: OldKind::Pair { x: 1 } });
        assert_eq!((between, b), (77, a));
    }

    #[test]
    fn a_record_cut_inside_a_field_is_an_error() {
        let new = New { a: 300, s: "abc".into(), kind: NewKind::Unit, added: vec![] };
        let mut w = super::field_writer();
        New::serialize(&new, &mut w).unwrap();
        let fields = postcard::ser_flavors::Flavor::finalize(w.output).unwrap();
        // Cut after `a` and one byte of `s` (length 3, then only "a").
        assert!(super::decode_record::<New>(&fields[..4]).is_err());
        // Cut before a field that has no default.
        assert!(super::decode_record::<New>(&fields[..2]).is_err());
        assert_eq!(super::decode_record::<New>(&fields).unwrap(), new);
    }

    fn new_record() -> impl proptest::strategy::Strategy<Value = New> {
        use proptest::prelude::*;
        (any::<u32>(), ".{0,20}", any::<Option<(u8, Option<u16>)>>(), prop::collection::vec(any::<u64>(), 0..8)).prop_map(|(a, s, k, added)| New {
            a,
            s,
            kind: k.map_or(NewKind::Unit, |(x, y)| NewKind::Pair { x, y }),
            added,
        })
    }

    proptest::proptest! {
        #[test]
        fn records_cross_versions_both_ways(new in new_record(), n in 0usize..4) {
            let news = vec![new.clone(); n];
            let old: Vec<Old> = postcard::from_bytes(&postcard::to_stdvec(&news).unwrap()).unwrap();
            let kind = match new.kind { NewKind::Unit => OldKind::Unit, NewKind::Pair { x, .. } => OldKind::Pair { x } };
            proptest::prop_assert_eq!(&old, &vec![Old { a: new.a, s: new.s.clone(), kind }; n]);
            let back: Vec<New> = postcard::from_bytes(&postcard::to_stdvec(&old).unwrap()).unwrap();
            let kind = match new.kind { NewKind::Unit => NewKind::Unit, NewKind::Pair { x, .. } => NewKind::Pair { x, y: None } };
            proptest::prop_assert_eq!(back, vec![New { a: new.a, s: new.s, kind, added: vec![] }; n]);
        }

        #[test]
        fn a_record_cut_anywhere_is_an_error_or_its_defaults(new in new_record(), cut in proptest::prelude::any::<proptest::sample::Index>()) {
            let bytes = postcard::to_stdvec(&new).unwrap();
            // The frame itself cut short: always an error.
            let at = cut.index(bytes.len());
            proptest::prop_assert!(postcard::from_bytes::<New>(&bytes[..at]).is_err());
            // A frame whose fields end early: an error, or the fields it holds and defaults.
            let fields = &bytes[1..];
            let at = cut.index(fields.len() + 1);
            if let Ok(got) = super::decode_record::<New>(&fields[..at]) {
                proptest::prop_assert_eq!((got.a, &got.s), (new.a, &new.s));
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = super::decode_record::<New>(&bytes);
            let _ = postcard::from_bytes::<Vec<New>>(&bytes);
        }
    }

    #[test]
    fn json_sees_plain_records() {
        let new = New { a: 1, s: "s".into(), kind: NewKind::Unit, added: vec![4] };
        assert_eq!(serde_json::to_string(&new).unwrap(), r#"{"a":1,"s":"s","kind":"Unit","added":[4]}"#);
    }
}
