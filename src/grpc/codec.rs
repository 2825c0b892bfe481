//! The protobuf codec every generated service and client uses: prost's, with
//! small buffers. It must stay a thin wrapper: no message logic here.
//!
//! tonic's default gives each call an 8 KiB encode buffer that lives as long
//! as the call. A watch stream lives for hours and sends messages of a few
//! hundred bytes, so with one stream per browser connection that idle buffer
//! was a quarter of the server's memory per connection. A buffer that starts
//! small still grows for a large message.

use std::marker::PhantomData;

use tonic::codec::BufferSettings;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First size of a call's encode and decode buffers (they grow as needed).
const BUFFER_SIZE: usize = 512;
/// tonic's default: how much a stream may encode before yielding.
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
