//! gilkit_marc: a pymarc-compatible MARC 21 reader and writer built on gilkit (in progress).
