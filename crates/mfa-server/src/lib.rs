#![doc = include_str!("../README.md")]

pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod extract;
pub mod logging;
pub mod mail_dispatch;
pub mod metrics;
pub mod middleware;
pub mod notice_sender;
pub mod openapi;
pub mod password_pool;
pub mod request_context;
pub mod routes;
pub mod wire;

pub use app::{Application, Service, StartError};
pub use config::Config;
