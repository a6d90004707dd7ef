//! The Q/DQ graph's naming protocol. The quantizer names what it adds after the tensor or
//! layer it belongs to, and later passes find those nodes again by name: the accuracy search
//! copies one tensor's pair into the float model, the score ceiling reads a pair's grid, the
//! peak rewrites reuse a pair's integers. Every writer and reader goes through this file, so a
//! rename cannot break one side alone.
//!
//! ```
//! use edgesight::optimize::qdq::names::Pair;
//! let p = Pair("conv1");
//! assert_eq!(p.q_node(), "conv1__Q");
//! assert_eq!(Pair::of_q_node(&p.q_node()), Some("conv1"));
//! ```

/// The names around one activation tensor's QuantizeLinear → DequantizeLinear pair: the pair
/// reads the tensor and its readers read [`Pair::dequantized`].
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a>(pub &'a str);

impl Pair<'_> {
    /// The pair's scale initializer.
    pub fn scale(self) -> String {
        format!("{}__scale", self.0)
    }
    /// The pair's zero-point initializer.
    pub fn zero_point(self) -> String {
        format!("{}__zp", self.0)
    }
    /// The integer tensor between Q and DQ.
    pub fn quantized(self) -> String {
        format!("{}__q", self.0)
    }
    /// The dequantized copy that the tensor's readers take.
    pub fn dequantized(self) -> String {
        format!("{}__dq", self.0)
    }
    /// The QuantizeLinear node.
    pub fn q_node(self) -> String {
        format!("{}__Q", self.0)
    }
    /// The DequantizeLinear node.
    pub fn dq_node(self) -> String {
        format!("{}__DQ", self.0)
    }
    /// The tensor a QuantizeLinear node named `node` quantizes, when it is a pair's.
    pub fn of_q_node(node: &str) -> Option<&str> {
        node.strip_suffix("__Q")
    }
}

/// A constant stored in integers behind its own DequantizeLinear: a layer's weights, its bias,
/// or a scalar an Add reads.
#[derive(Debug, Clone)]
pub struct Stored {
    pub quantized: String,
    pub scale: String,
    pub zero_point: String,
    pub dequantized: String,
    pub dq_node: String,
}

impl Stored {
    /// A layer's int8 weights; `name` is [`per_layer`] of the float weight.
    pub fn weight(name: &str) -> Self {
        let dq = format!("{name}__wdq");
        Stored {
            quantized: format!("{name}__q8"),
            scale: format!("{name}__wscale"),
            zero_point: format!("{name}__wzp"),
            dq_node: format!("{dq}__DQ"),
            dequantized: dq,
        }
    }
    /// A layer's int32 bias; `name` is [`per_layer`] of the float bias.
    pub fn bias(name: &str) -> Self {
        let dq = format!("{name}__bdq");
        Stored {
            quantized: format!("{name}__q32"),
            scale: format!("{name}__bscale"),
            zero_point: format!("{name}__bzp"),
            dq_node: format!("{dq}__DQ"),
            dequantized: dq,
        }
    }
    /// A one-element constant, given back exactly.
    pub fn constant(name: &str) -> Self {
        Stored {
            quantized: format!("{name}__cq"),
            scale: format!("{name}__cscale"),
            zero_point: format!("{name}__czp"),
            dequantized: format!("{name}__cdq"),
            dq_node: format!("{name}__CDQ"),
        }
    }
}

/// One layer's copy of a tensor that several layers may read (a shared weight or constant).
pub fn per_layer(tensor: &str, layer: &str) -> String {
    format!("{tensor}__{layer}")
}

/// The zero bias given to a layer that had none, named after its weight.
pub fn zero_bias(weight: &str) -> String {
    format!("{weight}__bias")
}

/// A float bias with the rounding shift taken out.
pub fn corrected_bias(bias: &str) -> String {
    format!("{bias}__corrected")
}
