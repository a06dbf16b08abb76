//! The microscope: what each unit (channel) of one layer responds to. For a layer of any model,
//! every chosen channel gets
//! - a feature visualisation ([`visualise`]): an image optimised, Lucid-style, to excite that
//!   channel, many channels in one batch (one forward and one backward pass per step for the
//!   whole batch), with an optional diversity term that makes a unit's images differ;
//! - its top dataset patches ([`scan`]): the images of a folder that excite the channel most,
//!   cropped to the receptive field of the strongest position ([`receptive`]), found by
//!   streaming the folder once in batches with a bounded top-k per channel, so memory does not
//!   grow with the folder; and the histogram of the channel's per-image peak over the folder.
//!
//! Both run a prefix of the graph, up to the layer ([`crate::engine::Graph::subgraph`]): the rest of the
//! network does not change a unit's activation.
//!
//! Children: `units` (the layer and channel selection), `visualise`, `diversity` (Lucid's
//! diversity objective and its gradient), `receptive` (receptive fields from the graph), `scan`
//! (the streaming top-k and histograms).

pub mod diversity;
pub mod receptive;
pub mod scan;
pub mod units;
pub mod visualise;

pub use receptive::{Field, receptive_fields};
pub use scan::{
    Histogram, Hit, ScanConfig, ScanReport, Source, UnitScan, crop_patch, image_files, scan_folder,
};
pub use units::{UnitLayer, parse_channels};

pub use visualise::{UnitImage, VisConfig, visualise_units};
