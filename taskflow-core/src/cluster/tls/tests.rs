//! Tests of TLS loading.
