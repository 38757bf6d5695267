
pub mod sandbox;
