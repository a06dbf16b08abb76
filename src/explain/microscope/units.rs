//! The layer a microscope looks at and the channels it looks at: a convolutional layer's
//! units are its channels (`[n, c, h, w]`), a dense layer's are its outputs (`[n, c]`).

use crate::engine::Graph;
use crate::engine::graph::ValueId;
use crate::explain::{ExplainError, ExplainResult};

/// A layer whose units can be probed.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitLayer {
    pub value: ValueId,
    pub name: String,
    /// Units: channels of `[n, c, h, w]`, or outputs of `[n, c]`.
    pub channels: usize,
    /// `[h, w]` of one channel at the graph's declared input size (`[1, 1]` for a dense layer).
    pub grid: [usize; 2],
}

impl UnitLayer {
    /// The layer called `name`, or a sentence saying why its units cannot be probed.
    pub fn find(graph: &Graph, name: &str) -> ExplainResult<Self> {
        let value = graph.layer_value(name).ok_or_else(|| {
            ExplainError::invalid(format!("the model has no layer named '{name}'"))
        })?;
        if graph.inputs().len() != 1 {
            return Err(ExplainError::invalid(format!(
                "the microscope needs a model with one input, this one has {}",
                graph.inputs().len()
            )));
        }
        let shape = &graph.value(value).shape;
        let (channels, grid) = match shape.as_slice() {
            [_, c, h, w] => (*c, [*h, *w]),
            [_, c] => (*c, [1, 1]),
            s => {
                return Err(ExplainError::invalid(format!(
                    "layer '{name}' has shape {s:?}; the microscope reads channels of [n, c, h, w] \
                     or the outputs of a dense layer [n, c]"
                )));
            }
        };
        if channels == 0 {
            return Err(ExplainError::invalid(format!(
                "layer '{name}' has no channels"
            )));
        }
        if value == graph.inputs()[0] {
            return Err(ExplainError::invalid(format!(
                "'{name}' is the model's input; pick a layer (`convscope summary` lists them)"
            )));
        }
        Ok(Self {
            value,
            name: graph.value(value).name.clone(),
            channels,
            grid,
        })
    }

    /// Whether the units are outputs of a dense layer (no spatial extent).
    pub fn is_dense(&self) -> bool {
        self.grid == [1, 1]
    }
}

/// Channels from a command-line list: `all`, `7`, `0..64` (end excluded), `0..=63`, or a comma
/// list of those; each checked against the layer's `channels`. Order kept, duplicates dropped.
pub fn parse_channels(spec: &str, channels: usize) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = Vec::new();
    let number = |s: &str| -> Result<usize, String> {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{}' is not a channel number", s.trim()))
    };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = if part == "all" {
            0..channels
        } else if let Some((a, b)) = part.split_once("..=") {
            number(a)?..number(b)?.saturating_add(1)
        } else if let Some((a, b)) = part.split_once("..") {
            number(a)?..number(b)?
        } else {
            let c = number(part)?;
            c..c + 1
        };
        if range.is_empty() {
            return Err(format!("the channel range '{part}' is empty"));
        }
        if range.end > channels {
            return Err(format!(
                "channel {} is out of range: the layer has {channels} channels (0..{channels})",
                range.end - 1
            ));
        }
        for c in range {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        return Err("no channels were given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists() {
        assert_eq!(parse_channels("0..4", 8), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_channels("0..=2, 7", 8), Ok(vec![0, 1, 2, 7]));
        assert_eq!(parse_channels("3,3,1", 8), Ok(vec![3, 1]));
        assert_eq!(parse_channels("all", 3), Ok(vec![0, 1, 2]));
        let err = parse_channels("0..9", 8).unwrap_err();
        assert!(
            err.contains("channel 8 is out of range") && err.contains("8 channels"),
            "{err}"
        );
        assert!(parse_channels("x", 8).unwrap_err().contains("'x'"));
        assert!(parse_channels("4..2", 8).unwrap_err().contains("empty"));
        assert!(parse_channels("", 8).is_err());
    }
}
