//! `petrel-cni`: the CNI plugin that attaches pods to Petrel.
//!
//! Empty until the CNI issue lands; the crate exists so the workspace has the
//! layout DESIGN.md describes.
#![deny(unsafe_code)]
