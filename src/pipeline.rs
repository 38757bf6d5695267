pub mod body;
pub mod policy;
