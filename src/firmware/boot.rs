//! RAUC custom boot back end over systemd-boot (filled in by the A/B upgrade work).
