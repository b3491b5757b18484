//! rnet's end-to-end lab tests live in `tests/lab/` (one test binary, `lab`).
//! They run the real plugin executables in throwaway namespaces; see the README.
