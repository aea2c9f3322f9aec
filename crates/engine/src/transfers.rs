//! A merchant's deposits and withdrawals as one history, under the shared transaction
//! ids of `kassa_core::transfers` (for the API dialects that list both together).

use kassa_core::ledger::MerchantId;
use kassa_core::transfers::{parse_transfer_id, transfer_id, TransferKind};
use kassa_store::{TransferQuery, TransferRow};

use crate::withdrawals::Withdrawal;
use crate::{Engine, EngineError};

/// A deposit or withdrawal as the history shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The shared id (`kassa_core::transfers`).
    pub id: i64,
    pub kind: TransferKind,
    pub currency: String,
    pub address: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub amount: String,
    pub fee: String,
    /// The deposit's or withdrawal's own status.
    pub status: String,
    pub txid: Option<String>,
    pub confirmations: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Transfer {
    /// A withdrawal as the history shows it (`None` if its id does not fit the shared
    /// id space).
    pub fn from_withdrawal(w: &Withdrawal) -> Option<Transfer> {
        Some(Transfer {
            id: transfer_id(TransferKind::Send, w.id)?,
            kind: TransferKind::Send,
            currency: w.currency.clone(),
            address: w.address.clone(),
            label: None,
            description: w.description.clone(),
            amount: w.amount.clone(),
            fee: w.fee.clone(),
            status: w.status.clone(),
            txid: w.txid.clone(),
            confirmations: w.confirmations,
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
        })
    }
}

impl Engine {
    fn transfer_view(&self, r: TransferRow) -> Result<Transfer, EngineError> {
        let c = self.currencies.get(&r.currency)?;
        let fee = match r.kind {
            TransferKind::Receive => match r.fee_units {
                Some(fixed) => fixed,
                None => c.deposit_fee_units(r.amount_units)?,
            },
            TransferKind::Send => r.fee_units.unwrap_or(0),
        };
        Ok(Transfer {
            id: transfer_id(r.kind, r.row_id).ok_or(EngineError::NotFound("transaction"))?,
            kind: r.kind,
            currency: r.currency.clone(),
            address: r.address,
            label: r.label,
            description: r.description,
            amount: c.amount(r.amount_units)?.to_string(),
            fee: c.amount(fee)?.to_string(),
            status: r.status,
            txid: r.txid,
            confirmations: r.confirmations,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }

    /// The merchant's transfers matching `q` (its merchant is set here), and how many
    /// match in all.
    pub async fn transfers(&self, merchant: MerchantId, mut q: TransferQuery) -> Result<(Vec<Transfer>, i64), EngineError> {
        q.merchant = Some(merchant);
        if let Some(c) = &q.currency {
            self.currencies.get(c)?;
        }
        let rows = self.store.transfers(&q).await?;
        let count = self.store.count_transfers(&q).await?;
        Ok((rows.into_iter().map(|r| self.transfer_view(r)).collect::<Result<_, _>>()?, count))
    }

    /// One transfer by its shared id.
    pub async fn transfer(&self, merchant: MerchantId, id: i64) -> Result<Transfer, EngineError> {
        let (kind, row_id) = parse_transfer_id(id).ok_or(EngineError::NotFound("transaction"))?;
        let q = TransferQuery { merchant: Some(merchant), kind: Some(kind), row_id: Some(row_id), limit: 1, ..Default::default() };
        let row = self.store.transfers(&q).await?.into_iter().next().ok_or(EngineError::NotFound("transaction"))?;
        self.transfer_view(row)
    }

    /// The latest deposit to an address with this label.
    pub async fn latest_receive_by_label(&self, merchant: MerchantId, label: &str) -> Result<Transfer, EngineError> {
        let q = TransferQuery {
            merchant: Some(merchant),
            kind: Some(TransferKind::Receive),
            label: Some(label.to_string()),
            limit: 1,
            ..Default::default()
        };
        let row = self.store.transfers(&q).await?.into_iter().next().ok_or(EngineError::NotFound("transaction"))?;
        self.transfer_view(row)
    }
}
