//! Petrel's vhost-user backend (virtio-net device side): protocol handling
//! in server and client socket modes, guest memory mapping, and the
//! poll-mode split-virtqueue fast path.
//!
//! Empty until the vhost-user issue lands; the crate exists so the workspace
//! has the layout DESIGN.md describes.
#![deny(unsafe_code)]
