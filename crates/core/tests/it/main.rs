//! Tests of the pure core: scripted executors and a manual clock, no sleeping.

mod fan_out;
mod harness;
mod properties;
mod scenarios;
