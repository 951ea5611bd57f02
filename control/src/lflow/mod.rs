//! OVN logical flows → Petrel tables: the parser of OVN's match and action
//! language ([`parse`]), its symbol table ([`symtab`]), normalisation of
//! matches into masked conjunctions ([`expr`]), actions ([`actions`]) and
//! the compiler from the Southbound replica to a table snapshot
//! ([`compile`]).

pub mod actions;
pub mod compile;
pub mod expr;
pub mod parse;
pub mod symtab;

pub use compile::{Compiled, Compiler, LocalPorts, Refusal};
