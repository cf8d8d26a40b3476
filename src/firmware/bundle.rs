//! RAUC bundles: parsed and verified before any byte of a slot is written (filled in by the A/B upgrade work).
