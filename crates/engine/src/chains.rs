//! The configured chains and what merchants do with them directly: deposit addresses
//! and the list of deposits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kassa_chain::{Asset, ChainAdapter};
use kassa_core::ledger::MerchantId;
use kassa_store::{DepositAddressRow, DepositQuery, DepositRow, NewDepositAddress, StoreError};
use serde::Serialize;
use tokio::sync::Notify;

use crate::timefmt::format_ms;
use crate::notifications::Origin;
use crate::{Engine, EngineError};

/// How a chain is watched.
#[derive(Clone, Debug)]
pub struct ChainSettings {
    /// How often the watcher polls when no node hook wakes it.
    pub poll_interval: Duration,
    /// Deepest reorg handled automatically; deeper ones halt the chain.
    pub max_reorg_depth: u64,
    /// Height the first scan starts from (default: the tip at first start).
    pub start_height: Option<u64>,
    /// Most blocks scanned per cycle (bounds one cycle's work).
    pub max_blocks_per_cycle: u64,
    /// A tip that has not moved for this long marks the chain lagging (an alert, and
    /// no invoice on it expires until it catches up); `None`: never.
    pub stall_after: Option<Duration>,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self { poll_interval: Duration::from_secs(5), max_reorg_depth: 10, start_height: None, max_blocks_per_cycle: 500, stall_after: None }
    }
}

pub struct Chain {
    pub adapter: Arc<dyn ChainAdapter>,
    pub settings: ChainSettings,
    /// Wakes the watcher at once (node hooks).
    pub wake: Arc<Notify>,
}

#[derive(Default)]
pub struct Chains {
    by_name: BTreeMap<String, Chain>,
}

impl Chains {
    pub fn add(&mut self, adapter: Arc<dyn ChainAdapter>, settings: ChainSettings) {
        let name = adapter.chain().to_string();
        self.by_name.insert(name, Chain { adapter, settings, wake: Arc::new(Notify::new()) });
    }

    pub fn get(&self, name: &str) -> Option<&Chain> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }

    /// Wakes a chain's watcher; false for an unknown chain.
    pub fn wake(&self, name: &str) -> bool {
        match self.by_name.get(name) {
            Some(c) => {
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A deposit address as merchants see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DepositAddress {
    /// The address's own number (the CoinsPaid-style dialect shows it).
    #[serde(skip)]
    pub id: i64,
    pub address: String,
    pub currency: String,
    #[schema(required = true)]
    pub label: Option<String>,
    /// Your id for the address: asking again with it returns the same address.
    #[schema(required = true)]
    pub foreign_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The currency its deposits are converted to on arrival (absent: kept as received).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convert_to: Option<String>,
}

impl From<DepositAddressRow> for DepositAddress {
    fn from(r: DepositAddressRow) -> Self {
        Self {
            id: r.id,
            address: r.address,
            currency: r.currency,
            label: r.label,
            foreign_id: r.foreign_id,
            created_at: format_ms(r.created_at_ms),
            convert_to: r.convert_to,
        }
    }
}

/// A deposit as merchants see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Deposit {
    pub id: i64,
    pub currency: String,
    pub address: String,
    pub txid: String,
    pub vout: i64,
    #[schema(value_type = crate::schemas::Amount)]
    pub amount: String,
    /// seen: in the mempool; confirming: in a block, below the currency's confirmations;
    /// credited: on the balance; reversed: its block left the chain after it was
    /// credited (the credit was taken back); dropped: left the mempool unconfirmed.
    #[schema(schema_with = crate::schemas::deposit_status)]
    pub status: String,
    pub confirmations: i64,
    #[schema(required = true)]
    pub block_height: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Longest label or foreign id accepted.
const MAX_TAG_LEN: usize = 200;

impl Engine {
    /// A chain's assets, each with the currency it is booked as (the currency of the
    /// same code, which must name this chain).
    pub(crate) fn chain_assets(&self, chain: &str) -> Result<HashMap<String, (Asset, kassa_core::Currency)>, EngineError> {
        let entry = self.chains.get(chain).ok_or_else(|| EngineError::ChainNotConfigured(chain.to_string()))?;
        let mut out = HashMap::new();
        for asset in entry.adapter.assets() {
            let currency = self
                .currencies
                .all()
                .find(|c| c.code.as_str() == asset.code && c.chain.as_deref() == Some(chain))
                .cloned()
                .ok_or_else(|| EngineError::invalid("chain", format!("asset {} of chain {chain} is not a currency carried by it", asset.code)))?;
            out.insert(asset.code.clone(), (asset.clone(), currency));
        }
        Ok(out)
    }

    /// A fresh deposit address of `chain` for `currency`, labelled in the node wallet.
    pub(crate) async fn new_address(chain: &Chain, currency: &str, label: &str) -> Result<String, EngineError> {
        let target = chain.adapter.new_deposit_address(currency, label).await.map_err(EngineError::Chain)?;
        if target.tag.is_some() {
            // Deposit rows hold an address only; tagged targets need a place to keep the tag.
            return Err(EngineError::invalid("currency", format!("{currency}: deposit tags are not supported yet")));
        }
        Ok(target.address)
    }

    /// Whether `currency` can be received here now: active, receivable, on a chain
    /// that is configured.
    pub fn receivable(&self, currency: &str) -> bool {
        self.chain_of(currency).is_ok_and(|(c, _)| c.active && c.can_receive)
    }

    pub(crate) fn chain_of(&self, currency: &str) -> Result<(&kassa_core::Currency, &Chain), EngineError> {
        let c = self.currencies.active(currency)?;
        let chain_name = c.chain.as_deref().ok_or_else(|| EngineError::invalid("currency", format!("{currency} is not carried by a chain")))?;
        let chain = self.chains.get(chain_name).ok_or_else(|| EngineError::ChainNotConfigured(chain_name.to_string()))?;
        Ok((c, chain))
    }

    /// A new deposit address for a merchant; with a `foreign_id`, the same address every
    /// time that id is asked for again.
    pub async fn create_deposit_address(
        &self,
        merchant: MerchantId,
        currency: &str,
        label: Option<String>,
        foreign_id: Option<String>,
    ) -> Result<DepositAddress, EngineError> {
        self.create_deposit_address_from(merchant, currency, label, foreign_id, Origin::native(), None).await
    }

    /// As `create_deposit_address`, for an API dialect: the address's deposits are also
    /// reported in that dialect's callback format (to `origin.callback_url` when given,
    /// which must pass the callback target checks). With `convert_to`, its deposits are
    /// converted to that currency on arrival; a `foreign_id` keeps the conversion its
    /// address was made with (asking for another is refused).
    pub async fn create_deposit_address_from(
        &self,
        merchant: MerchantId,
        currency: &str,
        label: Option<String>,
        foreign_id: Option<String>,
        origin: Origin,
        convert_to: Option<&str>,
    ) -> Result<DepositAddress, EngineError> {
        for (field, v) in [("label", &label), ("foreign_id", &foreign_id)] {
            if let Some(v) = v {
                if v.len() > MAX_TAG_LEN {
                    return Err(EngineError::invalid(field, format!("must be 1-{MAX_TAG_LEN} bytes")));
                }
                crate::error::check_text(field, v, MAX_TAG_LEN)?;
            }
        }
        let (c, chain) = self.chain_of(currency)?;
        if !c.can_receive {
            return Err(EngineError::invalid("currency", format!("{currency} cannot receive deposits")));
        }
        let convert_to = match convert_to {
            Some(to) => {
                self.check_deposit_conversion(c.code.as_str(), to)?;
                Some(self.currencies.get(to)?.code.to_string())
            }
            None => None,
        };
        let same_conversion = |existing: DepositAddressRow| {
            if existing.convert_to == convert_to {
                return Ok(existing.into());
            }
            let has = existing.convert_to.as_deref().map_or("no conversion".to_string(), |to| format!("conversion to {to}"));
            Err(EngineError::invalid("foreign_id", format!("the {currency} address of this foreign_id was made with {has}; use another foreign_id")))
        };
        if let Some(f) = &foreign_id {
            if let Some(existing) = self.store.deposit_address_by_foreign_id(merchant, currency, f).await? {
                return same_conversion(existing);
            }
        }
        let callback_url = match &origin.callback_url {
            Some(url) => Some(self.check_callback_url(url).await?),
            None => None,
        };
        let node_label = format!("m{}", merchant.0);
        let address = Self::new_address(chain, c.code.as_str(), &node_label).await?;
        let row = self
            .store
            .insert_deposit_address(&NewDepositAddress {
                merchant,
                user_id: None,
                currency: c.code.to_string(),
                chain: chain.adapter.chain().to_string(),
                address,
                label,
                foreign_id: foreign_id.clone(),
                origin: origin.dialect.clone(),
                callback_url,
                convert_to: convert_to.clone(),
            })
            .await;
        match row {
            Ok(r) => Ok(r.into()),
            // A concurrent request with the same foreign_id won: answer with its address.
            Err(StoreError::Duplicate { .. }) if foreign_id.is_some() => self
                .store
                .deposit_address_by_foreign_id(merchant, currency, foreign_id.as_deref().unwrap_or_default())
                .await?
                .map(same_conversion)
                .ok_or_else(|| EngineError::Conflict("deposit address vanished".into()))?,
            Err(e) => Err(e.into()),
        }
    }

    /// Resumes a chain halted by a deep reorg (an operator's decision, once the chain
    /// has been looked at). False if it was not halted.
    pub async fn resume_chain(&self, chain: &str) -> Result<bool, EngineError> {
        if self.chains.get(chain).is_none() {
            return Err(EngineError::ChainNotConfigured(chain.to_string()));
        }
        let resumed = self.store.resume_chain(chain).await?;
        if resumed {
            tracing::warn!(chain, "chain resumed by an operator");
            metrics::gauge!("kassa_chain_halted", "chain" => chain.to_string()).set(0.0);
        }
        Ok(resumed)
    }

    pub async fn deposits(&self, query: DepositQuery) -> Result<Vec<Deposit>, EngineError> {
        if let Some(c) = &query.currency {
            self.currencies.get(c)?;
        }
        self.store.deposits(&query).await?.into_iter().map(|d| self.deposit_view(d)).collect()
    }

    /// The latest deposits to one of the merchant's addresses (at most `limit`), newest
    /// first.
    pub async fn address_deposits(&self, merchant: MerchantId, address: &DepositAddress, limit: u32) -> Result<Vec<Deposit>, EngineError> {
        let rows = self.store.latest_deposits_at_address(address.id, limit).await?;
        rows.into_iter().filter(|d| d.merchant_id == merchant.0).map(|d| self.deposit_view(d)).collect()
    }

    pub(crate) fn deposit_view(&self, d: DepositRow) -> Result<Deposit, EngineError> {
        let c = self.currencies.get(&d.currency)?;
        Ok(Deposit {
            id: d.id,
            currency: d.currency.clone(),
            address: d.address,
            txid: d.txid,
            vout: d.vout,
            amount: c.amount(d.amount_units)?.to_string(),
            status: d.status,
            confirmations: d.confirmations,
            block_height: d.block_height,
            created_at: format_ms(d.first_seen_at_ms),
            updated_at: format_ms(d.updated_at_ms),
        })
    }
}
