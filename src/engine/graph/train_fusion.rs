//! Convolution + activation pairs a training pass runs as one kernel.
//!
//! In the smile CNN every convolution is followed by a ReLU; run apart, the ReLU reads and
//! writes the whole feature map once more in forward and again in backward. A pass kept for
//! backward ([`Keep::Backward`](super::graph::Keep)) instead applies the activation in the
//! convolution's epilogue and never stores the pre-activation value: its gradient is read from
//! the activation's output (`FusedActivation::passes`), which is exact for ReLU and Clip. The
//! graph itself is unchanged (names, parameters, checkpoints): only the pass differs.

use super::{Node, NodeId, ValueId};
use crate::engine::ops::{FusedActivation, Op};

/// For each node: the activation node fused into it (convolutions), or the convolution it was
/// fused into (activations). Indexed by `NodeId`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConvActivationPairs {
    activation_of: Vec<Option<(NodeId, FusedActivation)>>,
    conv_of: Vec<Option<NodeId>>,
}

impl ConvActivationPairs {
    /// Pairs a `Conv2d` with the ReLU / Clip that is the only reader of its output, when that
    /// output is not a graph output (a caller could not read it otherwise).
    pub(crate) fn find(nodes: &[Node], value_count: usize, outputs: &[ValueId]) -> Self {
        let mut readers: Vec<Vec<NodeId>> = vec![Vec::new(); value_count];
        for (n, node) in nodes.iter().enumerate() {
            for &v in &node.inputs {
                readers[v].push(n);
            }
        }
        let mut pairs = Self {
            activation_of: vec![None; nodes.len()],
            conv_of: vec![None; nodes.len()],
        };
        for (c, conv) in nodes.iter().enumerate() {
            if !matches!(conv.op, Op::Conv2d(_)) || outputs.contains(&conv.output) {
                continue;
            }
            let &[a] = readers[conv.output].as_slice() else {
                continue;
            };
            let Op::Activation(act) = nodes[a].op else {
                continue;
            };
            if let Some(act) = FusedActivation::of(act) {
                pairs.activation_of[c] = Some((a, act));
                pairs.conv_of[a] = Some(c);
            }
        }
        pairs
    }

    /// The activation node run inside convolution `conv`, and which activation it is.
    pub(crate) fn activation_of(&self, conv: NodeId) -> Option<(NodeId, FusedActivation)> {
        self.activation_of.get(conv).copied().flatten()
    }

    /// The convolution that computed activation node `act`'s output.
    pub(crate) fn conv_of(&self, act: NodeId) -> Option<NodeId> {
        self.conv_of.get(act).copied().flatten()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.conv_of.iter().all(Option::is_none)
    }
}
