//! Parameter initialisers (Kaiming, Xavier) drawing from an explicit seeded RNG.
